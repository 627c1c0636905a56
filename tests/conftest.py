"""Shared fixtures: one real embedded Triton server per test session, real data paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
SHARED = Path(os.environ.get("LESIONSEG_SHARED", ROOT.parent / "shared"))
SELFTEST_REPOSITORY = TESTS / "model_repository"


def ports() -> dict[str, int]:
    from lesionseg.server.embedded import free_port

    chosen: set[int] = set()
    while len(chosen) < 3:
        chosen.add(free_port())
    grpc, http, metrics = sorted(chosen)
    return {"grpc_port": grpc, "http_port": http, "metrics_port": metrics}


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
        from lesionseg.export.sct_legacy import export_sct_legacy

        models = legacy_models_dir(tmp_path_factory.mktemp("legacy_models"))
        export_sct_legacy(models, repo, contrast="all")
    if HAVE_TORCH:
        from lesionseg.export.nnunet import export_nnunet

        root = tmp_path_factory.mktemp("nnunet_models")
        for task, (variant, options) in NNUNET_TASKS.items():
            folder = nnunet_models.make_model(root / task, variant)
            export_nnunet(folder, repo, task=task, **options)
        from lesionseg.export.monai_ckpt import export_monai

        export_monai(make_monai_checkpoint(tmp_path_factory.mktemp("monai") / "best_model.ckpt"), repo, task=MONAI_TASK)
    return repo


MONAI_TASK = "seg_sc_contrast_agnostic_monai"
MONAI_FEATURES = [4, 8, 16, 32, 48, 48]  # SCT's v2.5 layout (6 stages, strides, kernels), narrower


def make_monai_checkpoint(path: Path, seed: int = 0) -> Path:
    """A Lightning-style checkpoint of SCT's contrast-agnostic network with random weights."""
    import torch

    from lesionseg.export.monai_ckpt import build_network

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

from lesionseg.export import synthetic_nnunet as nnunet_models  # noqa: E402

#: test tasks served by the session server: task -> (model variant, export options)
NNUNET_TASKS = {
    "seg_ms_lesion": (nnunet_models.VARIANTS[0], {}),
    "seg_sc_contrast_agnostic": (nnunet_models.VARIANTS[1], {"merge_folds": True, "mirroring": True}),
    "test_multiclass": (nnunet_models.VARIANTS[2], {}),
    # seg_ms_lesion-like size (6 stages, 32..320 features, patch 64x128x128): exports and serves on CPU
    "seg_ms_lesion_realistic": (nnunet_models.REALISTIC, {}),
}


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
    from lesionseg.server.embedded import EmbeddedServer, ServerSettings

    settings = ServerSettings(repository=session_repository, startup_timeout=300, grace_period=10, **ports())
    with EmbeddedServer(settings) as running:
        yield running
