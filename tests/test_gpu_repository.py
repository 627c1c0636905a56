"""GPU variants of the networks (`configs/gpu.pbtxt`, `configs/tensorrt.pbtxt`): generated through
model_config_pb2 and checked against golden files, validated by `lesionseg repository check`, and
chosen by the real embedded tritonserver 2.51 with `--model-config-name=gpu`.

The tests need no GPU: the bundled tritonserver has neither the ONNX Runtime nor the TensorRT
backend, so the GPU configs cannot load with it. What is shown for real is that Triton 2.51 picks
`configs/gpu.pbtxt` for the networks (and fails there only for want of the onnxruntime backend)
while the pipeline models keep `config.pbtxt` and load.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc
from waiting import wait_for

from lesionseg.client.cli import main
from lesionseg.core.errors import UsageError
from lesionseg.export.networks import Serving, write_network
from lesionseg.export.parity import ImageParity, ParityReport
from lesionseg.export.tensorrt import trtexec_command
from lesionseg.server.launch.binary import find_distribution, make_backend_dir, server_environment
from lesionseg.server.launch.embedded import free_ports
from lesionseg.server.repository.check import check_repository
from lesionseg.server.repository.gpu import (
    TENSORRT_ACCELERATOR_KEYS,
    GpuOptions,
    accelerator_problems,
    gpu_max_batch,
    gpu_network_spec,
    tensorrt_accelerator,
    tensorrt_parameters,
    tensorrt_plan_config,
)
from lesionseg.server.repository.legacy import network_entry
from lesionseg.server.repository.modelconfig import read_config, to_proto, to_text, write_config
from lesionseg.server.repository.networks import NetworkEntry

GOLDEN = Path(__file__).parent / "golden"
LESION = network_entry("t2s_lesion")  # deepseg_lesion_t2s_net: 1x48x48x48 blocks, 8 per pipeline request


def tiny_onnx(channels: int = 1, size: int = 8):
    """A real ONNX graph y = 2x on (N, channels, size, size, size), batch axis dynamic."""
    import onnx
    from onnx import TensorProto, helper

    shape = ["N", channels, size, size, size]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input_1", "two"], ["predictions"])], "tiny",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("predictions", TensorProto.FLOAT, shape)],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


TINY = NetworkEntry(name="tiny_net", input_name="input_1", output_names=("predictions",),
                    input_dims=(1, 8, 8, 8), output_dims=(1, 8, 8, 8), max_batch_size=4)


#: The one-line summary an FP16 parity report gives (the reports themselves: tests/test_precision.py).
FP16_PARITY = "fp16 parity passed on 5 images: min Dice 0.9988, lesion counts equal, max volume change 0.23%"


def fp16_report() -> ParityReport:
    """A passing FP16 report of one image, for what a report unlocks in the configs."""
    image = ImageParity(image="a.nii.gz", dice=1.0, lesions_reference=1, lesions_candidate=1,
                        volume_reference_mm3=8.0, volume_candidate_mm3=8.0)
    return ParityReport(precision="fp16", runtime="FP16 proxy", reference="onnxruntime FP32", images=[image])


def write_tiny(repository: Path, serving: Serving) -> Path:
    report = fp16_report() if serving.precision == "fp16" else None
    return write_network(TINY, tiny_onnx(), repository, serving=serving, record={"source": "test"}, report=report)


# -- generation --------------------------------------------------------------------------------

def test_gpu_config_matches_golden_file() -> None:
    text = to_text(to_proto(gpu_network_spec(LESION, GpuOptions(precision="fp16"), parity=FP16_PARITY)))
    assert text == (GOLDEN / "gpu_net.pbtxt").read_text()


def test_tensorrt_plan_config_matches_golden_file() -> None:
    gpu = to_proto(gpu_network_spec(LESION, GpuOptions(precision="fp16"), parity=FP16_PARITY))
    assert to_text(tensorrt_plan_config(gpu)) == (GOLDEN / "tensorrt_net.pbtxt").read_text()


def test_max_batch_is_sized_for_the_tile() -> None:
    nnunet = NetworkEntry(name="n", input_name="input", output_names=("logits",), input_dims=(1, 64, 128, 128),
                          output_dims=(2, 64, 128, 128), max_batch_size=8)
    assert gpu_max_batch(nnunet) == 8  # 1 Mi voxels a tile: 8 in the 8 Mi-voxel budget
    assert gpu_max_batch(LESION) == 64  # 48^3 blocks: capped at 64
    huge = NetworkEntry(name="h", input_name="x", output_names=("y",), input_dims=(2, 256, 256, 256),
                        output_dims=(2, 256, 256, 256), max_batch_size=2)
    assert gpu_max_batch(huge) == 2  # never below what one pipeline request sends


def test_accelerator_uses_only_keys_the_backend_parses() -> None:
    config = to_proto(gpu_network_spec(LESION, GpuOptions()))
    params = tensorrt_accelerator(config)
    assert params is not None and set(params) <= set(TENSORRT_ACCELERATOR_KEYS)
    assert params["precision_mode"] == "FP32"
    assert params["trt_engine_cache_path"] == "/engine-cache/deepseg_lesion_t2s_net"
    assert params["trt_profile_min_shapes"] == "input_1:1x1x48x48x48"
    assert params["trt_profile_opt_shapes"] == "input_1:8x1x48x48x48"
    assert params["trt_profile_max_shapes"] == "input_1:64x1x48x48x48"
    assert accelerator_problems(config) == []
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert config.model_warmup[0].batch_size == config.max_batch_size == 64
    assert config.model_warmup[0].inputs["input_1"].zero_data


@pytest.mark.parametrize("options, message", [
    (dict(precision="fp8"), "unknown GPU precision 'fp8'"),
    (dict(engine_cache="cache"), "must be an absolute path"),
    (dict(workspace_bytes=0), "workspace must be positive"),
])
def test_bad_gpu_options_are_usage_errors(options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        GpuOptions(**options)


# -- what the repository holds -------------------------------------------------------------------

def test_gpu_target_writes_both_variants_and_cpu_removes_them(tmp_path: Path) -> None:
    write_tiny(tmp_path, Serving(target="gpu", gpu=GpuOptions(precision="fp16"), precision="fp16"))
    folder = tmp_path / "tiny_net"
    cpu, gpu = read_config(folder / "config.pbtxt"), read_config(folder / "configs" / "gpu.pbtxt")
    assert (cpu.backend, cpu.instance_group[0].kind) == ("python", mc.ModelInstanceGroup.KIND_CPU)
    assert (gpu.backend, gpu.instance_group[0].kind) == ("onnxruntime", mc.ModelInstanceGroup.KIND_GPU)
    assert (folder / "1" / "model.py").is_file() and (folder / "1" / "model.onnx").is_file()
    record = json.loads((folder / "export.json").read_text())
    assert record["target"] == "gpu" and record["gpu"]["precision"] == "fp16"
    assert check_repository(tmp_path) == []
    # an engine built from these weights, then the network exported again: the engine is stale
    (folder / "1" / "model.plan").write_bytes(b"engine")
    write_config(tensorrt_plan_config(gpu), tmp_path, variant="tensorrt")
    write_tiny(tmp_path, Serving(target="cpu"))
    assert not (folder / "configs" / "gpu.pbtxt").exists()
    assert not (folder / "configs" / "tensorrt.pbtxt").exists() and not (folder / "1" / "model.plan").exists()
    assert check_repository(tmp_path) == []


def _edit_accelerator(path: Path, **changes: str | None) -> None:
    config = read_config(path)
    params = config.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters
    for key, value in changes.items():
        if value is None:
            del params[key]
        else:
            params[key] = value
    path.write_text(to_text(config))


def test_check_reports_what_the_onnxruntime_backend_would_refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tiny(tmp_path, Serving(target="gpu"))
    gpu = tmp_path / "tiny_net" / "configs" / "gpu.pbtxt"
    _edit_accelerator(gpu, trt_fp16_enable="1", precision_mode="FP8", trt_engine_cache_enable="maybe",
                      trt_engine_cache_path="cache", trt_profile_opt_shapes=None, trt_profile_max_shapes="input_1:65x1x8x8x8")
    assert main(["repository", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    for expected in ("tiny_net: configs/gpu.pbtxt: unknown TensorRT accelerator parameter 'trt_fp16_enable'",
                     "precision_mode 'FP8' is not FP32, FP16, BF16 or INT8",
                     "trt_engine_cache_enable 'maybe' is not a boolean",
                     "trt_engine_cache_path 'cache' is not an absolute path",
                     "need all of min, opt and max",
                     "trt_profile_max_shapes 'input_1:65x1x8x8x8' does not fit input input_1 (batch 1..64"):
        assert expected in out, (expected, out)


def test_check_follows_ensembles_into_the_variant(tmp_path: Path) -> None:
    """An ensemble that is right with config.pbtxt but wrong against a network's GPU variant."""
    from lesionseg.server.repository.modelconfig import EnsembleStep, ModelSpec, TensorSpec

    write_tiny(tmp_path, Serving(target="gpu"))
    tensor = TensorSpec(name="X", dtype="FP32", dims=(1, 8, 8, 8))
    write_config(ModelSpec(name="tiny", platform="ensemble", max_batch_size=4, inputs=[tensor],
                           outputs=[TensorSpec(name="Y", dtype="FP32", dims=(1, 8, 8, 8))],
                           steps=[EnsembleStep(model="tiny_net", input_map={"input_1": "X"}, output_map={"predictions": "Y"})]),
                 tmp_path)
    (tmp_path / "tiny" / "1").mkdir()
    assert check_repository(tmp_path) == []
    gpu = tmp_path / "tiny_net" / "configs" / "gpu.pbtxt"
    config = read_config(gpu)
    config.output[0].data_type = mc.TYPE_FP16
    gpu.write_text(to_text(config))
    problems = [str(p) for p in check_repository(tmp_path)]
    assert problems == ["tiny: ensemble output 'Y' is declared FP32 but its step produces FP16 (with --model-config-name=gpu)"]


# -- lesionseg export tensorrt ------------------------------------------------------------------

def test_trtexec_command_follows_the_gpu_profile(tmp_path: Path) -> None:
    config = to_proto(gpu_network_spec(LESION, GpuOptions()))
    command = trtexec_command(Path("/usr/bin/trtexec"), Path("m.onnx"), Path("m.plan"), config, precision="fp16")
    assert command == ["/usr/bin/trtexec", "--onnx=m.onnx", "--saveEngine=m.plan", "--minShapes=input_1:1x1x48x48x48",
                       "--optShapes=input_1:8x1x48x48x48", "--maxShapes=input_1:64x1x48x48x48",
                       "--memPoolSize=workspace:4096", "--fp16", "--skipInference"]


def _stand_in_trtexec(folder: Path, *, fail: bool) -> Path:
    """A stand-in for trtexec (none exists without TensorRT): it writes the --saveEngine file, or
    fails as trtexec does on a bad graph. It tests lesionseg's orchestration, not TensorRT."""
    script = folder / "trtexec"
    body = ('echo "[I] TensorRT version: 10.5.0"; for a in "$@"; do case "$a" in --saveEngine=*) '
            'printf engine > "${a#--saveEngine=}";; esac; done') if not fail else \
        'echo "[E] Error[4]: [network.cpp::validate] unsupported operation"; exit 1'
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_export_tensorrt_builds_engines_and_their_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tiny(tmp_path, Serving(target="gpu", gpu=GpuOptions(precision="fp16"), precision="fp16"))
    tool = _stand_in_trtexec(tmp_path, fail=False)
    assert main(["export", "tensorrt", "--repository", str(tmp_path / "x"), "--trtexec", str(tool)]) == 1
    assert "repository does not exist" in capsys.readouterr().err
    assert main(["export", "tensorrt", "--repository", str(tmp_path), "--trtexec", str(tool)]) == 0
    assert "tiny_net: fp16 engine" in capsys.readouterr().out
    folder = tmp_path / "tiny_net"
    assert (folder / "1" / "model.plan").read_bytes() == b"engine"
    plan = read_config(folder / "configs" / "tensorrt.pbtxt")
    assert (plan.platform, plan.default_model_filename, plan.backend) == ("tensorrt_plan", "model.plan", "")
    assert json.loads((folder / "export.json").read_text())["tensorrt"]["tensorrt_version"] == "10.5.0"
    assert check_repository(tmp_path) == []


def test_export_tensorrt_failures_leave_no_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny(tmp_path, Serving(target="cpu"))
    assert main(["export", "tensorrt", "--repository", str(tmp_path)]) == 1
    assert "no network has configs/gpu.pbtxt" in capsys.readouterr().err
    write_tiny(tmp_path, Serving(target="gpu"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("LESIONSEG_TRTEXEC", raising=False)
    assert main(["export", "tensorrt", "--repository", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "trtexec not found" in err and len(err.strip().splitlines()) == 1
    tool = _stand_in_trtexec(tmp_path, fail=True)
    assert main(["export", "tensorrt", "--repository", str(tmp_path), "--trtexec", str(tool)]) == 1
    err = capsys.readouterr().err
    assert "tiny_net: trtexec failed (exit 1): [E] Error[4]: [network.cpp::validate] unsupported operation" in err
    assert sorted(p.name for p in (tmp_path / "tiny_net" / "1").iterdir()) == ["model.onnx", "model.py"]
    assert not (tmp_path / "tiny_net" / "configs" / "tensorrt.pbtxt").exists()


# -- the real tritonserver 2.51 ----------------------------------------------------------------

def _model_states(repository: Path, *extra: str) -> dict[str, dict]:
    """Start the embedded tritonserver on `repository` with `extra` arguments; the repository
    index once no model is still loading."""
    dist = find_distribution()
    http, grpc, metrics = free_ports(3)
    with tempfile.TemporaryDirectory() as work:
        args = [str(dist.binary), f"--model-repository={repository}", f"--backend-directory={make_backend_dir(dist, Path(work))}",
                f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}", "--allow-gpu-metrics=false",
                "--exit-on-error=false", "--strict-readiness=false", *extra]
        server = subprocess.Popen(args, env=server_environment(dist), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)

        def settled() -> dict[str, dict] | None:
            """The index once every model is READY or UNAVAILABLE; None while one still loads."""
            assert server.poll() is None, "tritonserver exited"
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{http}/v2/repository/index", data=b"{}", method="POST")
                index = json.loads(urllib.request.urlopen(request, timeout=5).read())
            except OSError:
                return None  # not answering yet
            if index and all(m.get("state") in ("READY", "UNAVAILABLE") for m in index):
                return {m["name"]: m for m in index}
            return None

        try:
            return wait_for(settled, 120, "every model to be loaded or to have failed", interval=0.5)
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=60)


@pytest.mark.server
@pytest.mark.slow
def test_triton_251_takes_the_gpu_variant_only_when_asked(tmp_path: Path) -> None:
    write_tiny(tmp_path, Serving(target="gpu"))
    from lesionseg.server.backend.selftest import ScaleModel
    from lesionseg.server.repository.modelconfig import ModelSpec, TensorSpec
    from lesionseg.server.repository.pymodel import write_model_py

    # a CPU-only Python model beside it, as the pipelines are: config.pbtxt alone
    write_config(ModelSpec(name="cpu_only", backend="python", inputs=[TensorSpec(name="X", dtype="FP32", dims=(-1,))],
                           outputs=[TensorSpec(name="Y", dtype="FP32", dims=(-1,))], instance_count=1,
                           parameters={"factor": "2.0"}), tmp_path)
    write_model_py(tmp_path, "cpu_only", ScaleModel)
    default = _model_states(tmp_path)
    assert {name: m["state"] for name, m in default.items()} == {"cpu_only": "READY", "tiny_net": "READY"}
    gpu = _model_states(tmp_path, "--model-config-name=gpu")
    assert gpu["cpu_only"]["state"] == "READY"
    assert gpu["tiny_net"]["state"] == "UNAVAILABLE"
    assert "unable to find backend library for backend 'onnxruntime'" in gpu["tiny_net"]["reason"]
    np.testing.assert_equal(read_config(tmp_path / "tiny_net" / "configs" / "gpu.pbtxt").max_batch_size, 64)


@pytest.mark.slow
@pytest.mark.realdata
def test_models_install_legacy_for_the_gpu(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What the chart's init container runs on a GPU node: the real SCT weights, both variants."""
    repo = tmp_path / "models"
    assert main(["models", "install", "sct-legacy", "--from", str(shared / "sct_models"), "--contrast", "t2s",
                 "--repository", str(repo), "--target", "gpu", "--precision", "fp16", "--engine-cache", "/cache",
                 "--parity-data", str(shared / "sct_testing_data")]) == 0
    networks = sorted(p.parent.parent.name for p in repo.glob("*/configs/gpu.pbtxt"))
    assert networks == ["deepseg_ctr_dwi_net", "deepseg_ctr_t2s_net", "deepseg_lesion_t2s_net"]
    params = tensorrt_accelerator(read_config(repo / "deepseg_lesion_t2s_net" / "configs" / "gpu.pbtxt"))
    assert params is not None
    assert (params["precision_mode"], params["trt_engine_cache_path"]) == ("FP16", "/cache/deepseg_lesion_t2s_net")
    # only the lesion network has an FP16 report; the centerline networks stay FP32 on the GPU too
    ctr = tensorrt_accelerator(read_config(repo / "deepseg_ctr_t2s_net" / "configs" / "gpu.pbtxt"))
    assert ctr is not None and ctr["precision_mode"] == "FP32"
    assert json.loads((repo / "deepseg_lesion_t2s_net" / "parity.json").read_text())["passed"]
    assert not (repo / "deepseg_lesion_t2s" / "configs").exists()  # the Python pipeline stays on the CPU
    capsys.readouterr()
    assert main(["repository", "check", str(repo)]) == 0


def test_sccrop_networks_get_gpu_variants_with_profiles_for_their_shapes(tmp_path: Path) -> None:
    """sc-crop's detector (free height and width: letterboxed slabs of 32 to 320 pixels a side)
    and classifier (no batch axis, fixed 1 x 3 x 320 x 320): TensorRT profiles that cover them,
    which the repository check accepts and trtexec gets; free dims without a range are refused."""
    from lesionseg.server.repository.sccrop import network_entries

    detector, classifier = network_entries()
    options = GpuOptions()
    params = tensorrt_parameters(detector, options)
    batch = gpu_max_batch(detector)
    assert batch >= 8
    assert (params["trt_profile_min_shapes"], params["trt_profile_opt_shapes"], params["trt_profile_max_shapes"]) == (
        "images:1x3x32x32", "images:8x3x320x320", f"images:{batch}x3x320x320")
    assert gpu_max_batch(classifier) == 0
    params = tensorrt_parameters(classifier, options)
    assert {params[f"trt_profile_{k}_shapes"] for k in ("min", "opt", "max")} == {"images:1x3x320x320"}
    for entry in (detector, classifier):
        config = to_proto(gpu_network_spec(entry, options))
        assert accelerator_problems(config) == [], entry.name
        assert list(config.model_warmup[0].inputs["images"].dims) == ([3, 320, 320] if entry is detector else [1, 3, 320, 320])
        command = trtexec_command(Path("/usr/src/tensorrt/bin/trtexec"), Path("m.onnx"), Path("m.plan"), config, precision="fp32")
        assert any(arg.startswith("--minShapes=images:1x3x") for arg in command)
    assert not to_proto(gpu_network_spec(classifier, options)).HasField("dynamic_batching")
    bad = to_proto(gpu_network_spec(detector, options))
    for accelerator in bad.optimization.execution_accelerators.gpu_execution_accelerator:
        accelerator.parameters["trt_profile_max_shapes"] = "images:8x1x320x320"
    assert any("does not fit input images" in p for p in accelerator_problems(bad))
    free = NetworkEntry(name="free", input_name="x", output_names=("y",), input_dims=(1, -1, -1), output_dims=(2,))
    with pytest.raises(UsageError, match="free and no GPU profile range"):
        gpu_network_spec(free, options)
    with pytest.raises(ValueError, match="does not fit input dims"):
        NetworkEntry(name="f", input_name="x", output_names=("y",), input_dims=(1, -1), output_dims=(2,), gpu_dims=((2, 8), (1, 16)))
