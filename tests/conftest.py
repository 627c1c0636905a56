"""Shared fixtures: one real embedded Triton server per test session, real data paths; and the
suite's rules: a test that needs the server is slow (exporting the session's repository and
starting the server take minutes), and a skip must say why (else the run fails)."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
SHARED = Path(os.environ.get("LESIONSEG_SHARED", ROOT.parent / "shared"))
SELFTEST_REPOSITORY = TESTS / "model_repository"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("server") is not None and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


#: what pytest says of a skip that gives no reason
UNSTATED_REASONS = ("", "Skipped", "Skipped:", "unconditional skip", "Skipped: unconditional skip")
_skips: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        _skips.append((report.nodeid, longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skip without a stated reason fails the run."""
    unstated = [nodeid for nodeid, reason in _skips if reason.strip() in UNSTATED_REASONS]
    if unstated:
        print(f"\n{len(unstated)} test(s) skipped without a stated reason: {', '.join(unstated[:10])}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def ports() -> dict[str, int]:
    from lesionseg.server.launch.embedded import free_ports

    grpc, http, metrics = free_ports(3)
    return {"grpc_port": grpc, "http_port": http, "metrics_port": metrics}


def start_serve(args: list[str], *, timeout: float = 300, **popen) -> tuple[subprocess.Popen[str], list[str]]:
    """`python -m lesionseg.client.cli ARGS` (a `serve` command) as a child, returned with what it
    printed once every model is ready (the first line lists them); fails the test otherwise."""
    proc = subprocess.Popen([sys.executable, "-m", "lesionseg.client.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            return proc, lines
    proc.kill()
    pytest.fail(f"serve never became ready: {''.join(lines)} {proc.stderr.read() if proc.stderr else ''}")


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared (real SCT weights and images); tests needing it skip when it is absent."""
    if not (SHARED / "sct_models").is_dir():
        pytest.skip(f"real data not found at {SHARED} (set LESIONSEG_SHARED)")
    return SHARED


def legacy_models_dir(target: Path) -> Path:
    """The real SCT legacy models, plus `t2_lesion.h5`, a stand-in (the t2_ax weights) for the
    absent sagittal T2 model so the `-c t2` wiring can be exercised."""
    target.mkdir(parents=True, exist_ok=True)
    for sub in ("deepseg_lesion", "deepseg_sc"):
        for file in (SHARED / "sct_models" / sub).glob("*.h5"):
            (target / file.name).symlink_to(file)
    (target / "golden").symlink_to(SHARED / "sct_models" / "golden")
    (target / "t2_lesion.h5").symlink_to(SHARED / "sct_models" / "deepseg_lesion" / "t2_ax_lesion.h5")
    return target


@pytest.fixture(scope="session")
def session_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository the session's one server serves: the selftest models and, when ../shared is
    present, the legacy pipelines exported from the real SCT weights."""
    repo = tmp_path_factory.mktemp("repository")
    for model in SELFTEST_REPOSITORY.iterdir():
        shutil.copytree(model, repo / model.name)
    if (SHARED / "sct_models").is_dir():
        from lesionseg.export.legacy import export_sct_legacy

        models = legacy_models_dir(tmp_path_factory.mktemp("legacy_models"))
        export_sct_legacy(models, repo, contrast="all")
    if HAVE_TORCH:
        from lesionseg.export.nnunet import export_nnunet

        root = tmp_path_factory.mktemp("nnunet_models")
        for task, (variant, options) in NNUNET_TASKS.items():
            folder = nnunet_models.make_model(root / task, variant)
            if task in TRAINED_TASKS and (SHARED / "sct_testing_data").is_dir():
                import trained_nnunet

                patch, steps = TRAINED_TASKS[task]
                trained_nnunet.train_model(folder, SHARED / "sct_testing_data", steps=steps, patch=patch, cross_validation=True)
            export_nnunet(folder, repo, task=task, **options)
        from lesionseg.export.monai import export_monai

        export_monai(make_monai_checkpoint(tmp_path_factory.mktemp("monai") / "best_model.ckpt"), repo, task=MONAI_TASK)
    if HAVE_ULTRALYTICS:
        from lesionseg.export.sccrop import install_sccrop

        install_sccrop(str(sccrop_models.make(tmp_path_factory.mktemp("sccrop_models"))), repo)
    if HAVE_IVADOMED:
        from lesionseg.export.ivadomed import export_ivadomed

        export_ivadomed(make_ivadomed_members(tmp_path_factory.mktemp("ivadomed_models")), repo, task=IVADOMED_TASK)
    return repo


IVADOMED_TASK = "seg_ms_lesion_mp2rage_ivadomed"
IVADOMED_ORACLE = TESTS / "ivadomed_oracle"
HAVE_IVADOMED = all(importlib.util.find_spec(m) is not None for m in ("ivadomed", "loguru", "torch"))


def run_ivadomed_oracle(*args: str) -> None:
    """tests/ivadomed_oracle/oracle.py in a subprocess, with its import shim first on the path."""
    env = {**os.environ, "PYTHONPATH": str(IVADOMED_ORACLE / "shim")}
    done = subprocess.run([sys.executable, str(IVADOMED_ORACLE / "oracle.py"), *args], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"ivadomed oracle {args[0]} failed:\n{done.stderr[-3000:]}")


def make_ivadomed_members(root: Path, n: int = 3) -> Path:
    """An ensemble of `n` ivadomed members (ivadomed's Modified3DUNet, random weights) in SCT's
    layout: root/seed<i>/model_seg_ms_lesion_mp2rage/model_seg_ms_lesion_mp2rage.{onnx,json}."""
    run_ivadomed_oracle("make", str(root), str(n))
    return root


@pytest.fixture(scope="session")
def ivadomed_server(server):
    """The session server, when it serves the ivadomed test ensemble (needs ivadomed, see README)."""
    if not HAVE_IVADOMED:
        pytest.skip("ivadomed (the oracle) not installed: pip install --no-deps --ignore-requires-python ivadomed==2.9.10")
    return server


MONAI_TASK = "seg_sc_contrast_agnostic_monai"
MONAI_FEATURES = [4, 8, 16, 32, 48, 48]  # SCT's v2.5 layout (6 stages, strides, kernels), narrower


def make_monai_checkpoint(path: Path, seed: int = 0) -> Path:
    """A Lightning-style checkpoint of SCT's contrast-agnostic network with random weights."""
    import torch

    from lesionseg.export.monai import build_network

    torch.manual_seed(seed)
    net = build_network(len(MONAI_FEATURES), MONAI_FEATURES)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "epoch": 1}, path)
    return path


try:
    import nnunetv2  # noqa: F401  (the parity oracle)
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:  # the export/test extras are not installed
    HAVE_TORCH = False

import sccrop_models  # noqa: E402  (tests/: sc-crop's test networks; ultralytics only when made)
import synthetic_nnunet as nnunet_models  # noqa: E402  (tests/: the synthetic nnU-Net models)

#: the test lesion_ms's crop_metadata.json margins (mm; tests/sccrop_models.py)
SCCROP_PADDING = sccrop_models.PADDING

#: test tasks served by the session server: task -> (model variant, export options)
NNUNET_TASKS = {
    "seg_ms_lesion": (nnunet_models.VARIANTS[0], {}),
    "seg_sc_contrast_agnostic": (nnunet_models.VARIANTS[1], {"merge_folds": True, "mirroring": True}),
    "test_multiclass": (nnunet_models.VARIANTS[2], {}),
    # seg_ms_lesion-like size (6 stages, 32..320 features, patch 64x128x128): exports and serves on CPU
    "seg_ms_lesion_realistic": (nnunet_models.REALISTIC, {}),
    # SCT 7's lesion_ms: five folds voting (their label maps averaged, > 0.5), on sc-crop's cord box
    "lesion_ms": (nnunet_models.LESION_MS, {"fold_combination": "vote", "crop": SCCROP_PADDING}),
    # SCT 7's spinalcord through SCT's nnU-Net fork: two folds, the first counted twice, on sc-crop's box
    "spinalcord": (nnunet_models.SPINALCORD, {"fold_combination": "sct_fork", "crop": SCCROP_PADDING}),
    # SCT 7's lesion_ms_mp2rage, and no model under its SCT 6 name (seg_ms_lesion_mp2rage): the alias runs it
    "lesion_ms_mp2rage": (nnunet_models.LESION_MS_MP2RAGE, {}),
    # SCT 7's lesion_ms_axial_t2: 2D, region-based (sc holds lesion), AIL, its own trainer_class.py
    "lesion_ms_axial_t2": (nnunet_models.LESION_MS_AXIAL_T2, {"fold_combination": "sct_fork"}),
}

#: SCT 7's test tasks trained on ../shared's cord masks before export (tests/trained_nnunet.py: each
#: fold leaves one image out), so that their masks are compact like a real model's and the parity
#: tests can ask for SCT's Dice: task -> (training patch, steps per fold); ~85 s in all on 2 cores
TRAINED_TASKS = {"lesion_ms": ((16, 48, 48), 300), "spinalcord": ((16, 48, 48), 300), "lesion_ms_axial_t2": ((64, 64), 300)}

#: sc-crop's test networks (tests/sccrop_models.py) need ultralytics to be made
HAVE_ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None and HAVE_TORCH


@pytest.fixture(scope="session")
def sccrop_server(nnunet_server):
    """The session server, when it serves sc-crop's test networks and the cropped lesion_ms."""
    if not HAVE_ULTRALYTICS:
        pytest.skip("ultralytics not installed: pip install --no-deps ultralytics==8.4.190 (see README)")
    return nnunet_server


#: SCT's nnU-Net fork (nnunetv2-neuropoly, the oracle of SCT 7's tasks), installed by .ci/run
#: with `pip install --no-deps --target .oracles/nnunetv2-neuropoly nnunetv2-neuropoly==2.6.2`
NNUNET_FORK = Path(os.environ.get("LESIONSEG_NNUNET_FORK", ROOT / ".oracles" / "nnunetv2-neuropoly"))


@pytest.fixture(scope="session")
def nnunet_fork() -> Path:
    """The folder holding SCT's nnU-Net fork, to put first on an oracle subprocess's PYTHONPATH."""
    if not any(NNUNET_FORK.glob("nnunetv2_neuropoly-*.dist-info")):
        pytest.skip(f"SCT's nnU-Net fork not found at {NNUNET_FORK}: pip install --no-deps --target "
                    f"{NNUNET_FORK} nnunetv2-neuropoly==2.6.2 (or set LESIONSEG_NNUNET_FORK)")
    return NNUNET_FORK


@pytest.fixture(scope="session")
def nnunet_server(server):
    """The session server, when it serves the nnU-Net test tasks (needs the export extra and nnunetv2)."""
    if not HAVE_TORCH:
        pytest.skip("torch / nnunetv2 not installed (pip install -e '.[export,test]' torch==2.13.0)")
    return server


@pytest.fixture(scope="session")
def legacy_server(server, shared: Path):
    """The session server, when it serves the legacy pipelines (needs ../shared)."""
    return server


@pytest.fixture(scope="session")
def server(session_repository: Path):
    """The one real embedded Triton server of the test session."""
    from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings

    settings = ServerSettings(repository=session_repository, startup_timeout=300, grace_period=10, **ports())
    with EmbeddedServer(settings) as running:
        yield running


@pytest.fixture
def http_root(tmp_path: Path):
    """A loopback HTTP server over a folder; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
