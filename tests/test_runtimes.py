"""The OpenVINO runtime against ONNX Runtime in FP32, on every real image (the runtime bar: max
probability difference <= 1e-3 and Dice >= 0.9999), and served for real by the embedded Triton.

The parity runs the pipelines' own code in process (`segment_lesions`; nnU-Net's preprocess,
sliding window and postprocess) with the two runtimes as the network, so the only difference is
the runtime: the legacy networks from the real SCT weights, on each real image with each contrast
that has real weights (t2s, t2_ax); the nnU-Net test task `seg_ms_lesion` (synthetic plans, random
weights) on each real image.

The legacy networks are held to the whole bar. The nnU-Net test task has random weights, which
put many voxels near the decision boundary, where the runtimes' small FP32 differences show in the
probabilities: its test holds OpenVINO to the masks (Dice >= 0.9999) and to probabilities within
1e-2 (no gross error), not to 1e-3. How close each runtime's FP32 logits are to the network itself
is checked apart, against a PyTorch FP64 oracle of the same network (within 1e-5 of the largest
logit). OpenVINO is not the nnU-Net default while the nnU-Net networks are not held to 1e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lesionseg.core.nifti import load_nifti
from lesionseg.export.parity import dice
from lesionseg.export.precision import oriented_image
from lesionseg.server.backend.runtimes import make_runner
from lesionseg.server.pipelines.legacy import CONTRASTS, segment_lesions
from lesionseg.server.pipelines.legacy_centerline import CenterlineError

IMAGES = ("t1/t1w.nii.gz", "t2/t2.nii.gz", "t2/t2_fake_lesion.nii.gz", "t2s/t2s.nii.gz", "t2s/t2s_uncropped.nii.gz")
PROB_TOLERANCE = 1e-3  # the runtime bar: max probability difference between the runtimes
NNUNET_PROB_SANITY = 1e-2  # random weights: held to the masks and to no gross error, see the module docstring
MIN_DICE = 0.9999


def predictor(path: Path, runtime: str, *, input_name: str, output_name: str, batch: int):
    runner = make_runner(path, runtime=runtime, threads=1)
    return lambda x: np.concatenate([runner.run([output_name], {input_name: np.ascontiguousarray(x[i:i + batch])})[0]
                                     for i in range(0, len(x), batch)])


rpi = oriented_image  # (x, y, z) float32 in an SCT orientation and its spacing, as the pipeline models receive it


@pytest.fixture(scope="module")
def legacy_repository(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lesionseg.export.legacy import export_sct_legacy

    repo = tmp_path_factory.mktemp("legacy")
    export_sct_legacy(shared / "sct_models", repo)
    return repo


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("contrast", ["t2s", "t2_ax"])
@pytest.mark.parametrize("image", IMAGES)
def test_openvino_fp32_gives_onnxruntimes_legacy_masks(legacy_repository: Path, shared: Path, image: str, contrast: str) -> None:
    from lesionseg.server.repository.legacy import network_model, networks_of

    lesion_net, ctr_net = networks_of(contrast)
    data, spacing = rpi(shared / "sct_testing_data" / image, "RPI")
    results = {}
    for runtime in ("onnxruntime", "openvino"):
        nets = {name: predictor(legacy_repository / network_model(name) / "1" / "model.onnx", runtime,
                                input_name="input_1", output_name="predictions", batch=8) for name in (lesion_net, ctr_net)}
        try:
            results[runtime] = segment_lesions(data, spacing, CONTRASTS[contrast], ctr_predict=nets[ctr_net],
                                               lesion_predict=nets[lesion_net])
        except CenterlineError as exc:  # a contrast that finds no cord in this image: both must say so
            results[runtime] = str(exc)
    ort, ov = results["onnxruntime"], results["openvino"]
    if isinstance(ort, str) or isinstance(ov, str):
        assert ort == ov
        return
    assert float(np.abs(ort.res_prob - ov.res_prob).max()) <= PROB_TOLERANCE
    assert float(np.abs(ort.prob - ov.prob).max()) <= PROB_TOLERANCE
    assert dice(ort.seg, ov.seg) >= MIN_DICE


@pytest.fixture(scope="module")
def nnunet_export(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch", reason="needs the export extra (torch)")
    from conftest import NNUNET_TASKS

    import synthetic_nnunet
    from lesionseg.export.nnunet import export_nnunet

    variant, options = NNUNET_TASKS["seg_ms_lesion"]
    root = tmp_path_factory.mktemp("nnunet")
    repo = root / "repo"
    folder = synthetic_nnunet.make_model(root / "model", variant)
    result = export_nnunet(folder, repo, task="seg_ms_lesion", **options)
    return repo, result.plan, folder


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("image", IMAGES)
def test_openvino_fp32_gives_onnxruntimes_nnunet_masks(nnunet_export, shared: Path, image: str) -> None:
    from lesionseg.server.pipelines import nnunet

    repo, plan, _ = nnunet_export
    data, spacing = rpi(shared / "sct_testing_data" / image, plan.orientation)
    pre, props = nnunet.preprocess(data, spacing, plan)
    out = {}
    for runtime in ("onnxruntime", "openvino"):
        nets = [predictor(repo / name / "1" / "model.onnx", runtime, input_name="input", output_name="logits", batch=2)
                for name in plan.networks]
        logits = nnunet.sliding_window(pre, plan, lambda t: sum(net(t) for net in nets) / len(nets))
        shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
        seg, _ = nnunet.postprocess(logits, props, plan)
        out[runtime] = (shifted / shifted.sum(axis=0, keepdims=True), seg)
    (p_ort, seg_ort), (p_ov, seg_ov) = out["onnxruntime"], out["openvino"]
    assert float(np.abs(p_ort - p_ov).max()) <= NNUNET_PROB_SANITY
    assert dice(seg_ort > 0, seg_ov > 0) >= MIN_DICE


@pytest.mark.slow
def test_both_runtimes_near_an_fp64_oracle(nnunet_export) -> None:
    """The ONNX graph's FP32 logits on two random tiles, each runtime against the PyTorch network
    it was exported from, run in FP64: within 1e-5 of the largest logit."""
    import torch

    from lesionseg.export.nnunet import build_network, load_folder
    from lesionseg.export.torch_onnx import load_checkpoint

    repo, plan, folder_path = nnunet_export
    folder = load_folder(folder_path)
    checkpoint = folder.checkpoints[sorted(folder.checkpoints)[0]]
    network = build_network(folder)
    network.load_state_dict(load_checkpoint(checkpoint)["network_weights"])
    network = network.double().eval()
    onnx_path = repo / plan.networks[0] / "1" / "model.onnx"
    x = np.random.default_rng(0).standard_normal((2, 1, *plan.patch_size)).astype(np.float32)
    with torch.no_grad():
        reference = network(torch.from_numpy(x.astype(np.float64))).numpy()
    scale = float(np.abs(reference).max())
    for runtime in ("onnxruntime", "openvino"):
        got = make_runner(onnx_path, runtime=runtime, threads=1).run(["logits"], {"input": x})[0]
        assert float(np.abs(got - reference).max()) <= 1e-5 * scale, runtime


@pytest.mark.server
@pytest.mark.realdata
@pytest.mark.slow
def test_served_with_openvino(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--runtime openvino` through the CLI and the embedded Triton: the mask of ONNX Runtime's."""
    from lesionseg.client.cli import main
    from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings, free_ports
    from lesionseg.server.repository.modelconfig import parameters, read_config

    image = shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"
    masks = {}
    for runtime in ("onnxruntime", "openvino"):
        repo = tmp_path / runtime
        assert main(["export", "sct-legacy", "--models-dir", str(shared / "sct_models"), "--repository", str(repo),
                     "--contrast", "t2s", "--runtime", runtime]) == 0
        assert parameters(read_config(repo / "deepseg_lesion_t2s_net" / "config.pbtxt")).get("runtime", "onnxruntime") == runtime
        http, grpc, metrics = free_ports(3)
        with EmbeddedServer(ServerSettings(repository=repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
                                           startup_timeout=300)) as server:
            out = tmp_path / f"out_{runtime}"
            assert main(["deepseg-lesion", "-i", str(image), "-c", "t2s", "-ofolder", str(out), "-url", server.settings.grpc_url]) == 0
        masks[runtime] = np.asanyarray(load_nifti(out / "t2s_lesionseg.nii.gz").data)
    capsys.readouterr()
    assert masks["onnxruntime"].any()
    assert dice(masks["onnxruntime"], masks["openvino"]) >= MIN_DICE


def test_runtime_and_backend_configs(tmp_path: Path) -> None:
    from lesionseg.core.errors import UsageError
    from lesionseg.export.networks import Serving
    from lesionseg.server.repository.legacy import network_entry
    from lesionseg.server.repository.modelconfig import parameters, to_proto
    from lesionseg.server.repository.networks import network_spec

    entry = network_entry("t2s_lesion")
    python_ov = to_proto(network_spec(entry, backend="python", runtime="openvino"))
    assert (python_ov.backend, parameters(python_ov)["runtime"], parameters(python_ov)["weights"]) == ("python", "openvino", "model.onnx")
    assert "runtime" not in parameters(to_proto(network_spec(entry, backend="python", runtime="onnxruntime")))
    # auto (no --runtime): OpenVINO for the legacy lesion networks only, ONNX Runtime for the rest
    assert parameters(to_proto(network_spec(entry, backend="python")))["runtime"] == "openvino"
    assert "runtime" not in parameters(to_proto(network_spec(network_entry("t2s_ctr"), backend="python")))
    assert to_proto(network_spec(entry, backend="onnxruntime")).backend == "onnxruntime"
    native = to_proto(network_spec(entry, backend="openvino"))  # Triton's own OpenVINO backend reads model.onnx
    assert (native.backend, native.default_model_filename) == ("openvino", "model.onnx")
    assert parameters(native) == {"INFERENCE_NUM_THREADS": "2", "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}
    with pytest.raises(UsageError, match="--runtime openvino is for the python backend"):
        Serving(backend="onnxruntime", runtime="openvino")
    with pytest.raises(UsageError, match="unknown network runtime"):
        Serving(runtime="tensorflow")
    with pytest.raises(UsageError, match="unknown network runtime"):
        make_runner(tmp_path / "model.onnx", runtime="tensorflow")
