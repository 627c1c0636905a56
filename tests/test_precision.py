"""Reduced precision: the candidates, what a parity report unlocks in a repository, and, on the
real SCT weights and images, the reports an export computes.

A precision other than FP32 is written only with a passing parity report: on every real image,
the candidate's mask against the FP32 mask has Dice >= 0.99, the same lesion count and a total
lesion volume within 2 % (`ParityBar`); otherwise the export fails with the failing images and
their numbers in one line and writes nothing. The real-data tests hold the legacy networks to it:
INT8 of the t2s lesion network (ONNX Runtime static QDQ quantization calibrated on the real
images) misses the bar and is refused; the FP16 proxy of the t2s network passes; BF16 of the t2_ax
lesion network passes and is served. BF16 of the t2s network is close to the bar, so whether it
passes depends on the CPU's BF16 arithmetic: a report names the CPU it was computed on, and a
network warns at load when it runs on a CPU with other reduced-precision instructions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lesionseg.client.cli import main
from lesionseg.core.errors import ExportError, InputError, UsageError
from lesionseg.export.networks import Serving, write_network
from lesionseg.export.parity import ImageParity, ParityBar, ParityReport
from lesionseg.export.precision import ParityOptions, find_images, fp16_proxy, is_derived, make_candidate, quantize_int8
from lesionseg.server.repository.modelconfig import parameters, read_config, to_proto
from lesionseg.server.repository.networks import NetworkEntry, network_spec

TINY = NetworkEntry(name="tiny_net", input_name="x", output_names=("y",), input_dims=(2, 6, 6), output_dims=(2, 6, 6),
                    max_batch_size=4)


def conv_onnx(seed: int = 0):
    """x (N, 2, 6, 6) -> Conv 3x3 (+bias) -> Add w -> Sigmoid -> y: a graph whose FP16 rounding
    points are known (the Conv and Add outputs are rounded, the Sigmoid output is not)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((2, 2, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(2).astype(np.float32), "b")
    shift = numpy_helper.from_array((rng.standard_normal((2, 6, 6)) / 3).astype(np.float32), "s")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["c", "s"], ["a"], name="add"),
             helper.make_node("Sigmoid", ["a"], ["y"], name="sigmoid")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 6, 6])],
                              initializer=[weight, bias, shift])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run(model, x: np.ndarray, *, optimise: bool = True) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def report(precision: str, *dices: float) -> ParityReport:
    images = [ImageParity(image=f"i{k}.nii.gz", dice=d, lesions_reference=2, lesions_candidate=2,
                          volume_reference_mm3=100.0, volume_candidate_mm3=100.0) for k, d in enumerate(dices)]
    return ParityReport(precision=precision, runtime="test runtime", reference="onnxruntime FP32", images=images)


# -- images ----------------------------------------------------------------------------------------

def test_parity_images_are_the_images_not_their_masks(tmp_path: Path) -> None:
    names = ["t2/t2.nii.gz", "t2/t2_seg-manual.nii.gz", "t2/t2_fake_lesion.nii.gz", "t2/t2_fake_lesion_lesion_seg.nii.gz",
             "t2/t2_centerline-manual.nii.gz", "t2s/t2s_seg.nii.gz", "t1/t1w.nii", "sub-01/anat/sub-01_T2w_label-SC_mask.nii.gz",
             "notes.txt"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)] == \
        ["t1/t1w.nii", "t2/t2.nii.gz", "t2/t2_fake_lesion.nii.gz"]
    assert is_derived(Path("t2s_seg-deepseg.nii.gz")) and not is_derived(Path("t2s_uncropped.nii.gz"))
    with pytest.raises(InputError, match="does not exist"):
        find_images(tmp_path / "none")
    with pytest.raises(InputError, match="no NIfTI image"):
        find_images(tmp_path / "t2s")


def test_a_reduced_precision_needs_its_parity_data(tmp_path: Path) -> None:
    ParityOptions().check("fp32")
    with pytest.raises(UsageError, match="--precision bf16 is written only with its parity report: give --parity-data"):
        ParityOptions().check("bf16")
    with pytest.raises(UsageError, match="--calibration-data is for --precision int8"):
        ParityOptions(parity_data=tmp_path, calibration_data=tmp_path).check("bf16")
    with pytest.raises(UsageError, match="unknown precision 'fp8'"):
        ParityOptions().check("fp8")


@pytest.mark.parametrize("options, message", [
    (dict(precision="fp16"), "fp16 is TensorRT's on the GPU: it needs --target gpu"),
    (dict(precision="bf16", runtime="onnxruntime"), "bf16 runs on openvino"),
    (dict(precision="int8", runtime="onnxruntime"), "int8 runs on openvino"),
    (dict(precision="bf16", backend="onnxruntime"), "not Triton's onnxruntime backend"),
    (dict(precision="fp64"), "unknown precision 'fp64'"),
])
def test_impossible_precisions_are_usage_errors(options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Serving(**options)


def test_other_exports_refuse_a_reduced_precision(tmp_path: Path) -> None:
    from lesionseg.export.monai import export_monai

    with pytest.raises(UsageError, match="--precision bf16 is not offered for MONAI exports"):
        export_monai(tmp_path, tmp_path / "repo", task="t", serving=Serving(precision="bf16"))
    assert not (tmp_path / "repo").exists()


# -- candidates ------------------------------------------------------------------------------------

def test_fp16_proxy_rounds_every_tensor_between_layers_but_the_kept_ones() -> None:
    from onnx import numpy_helper

    model = conv_onnx()
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 6)).astype(np.float32)
    proxy = fp16_proxy(model)
    got = run(proxy, x, optimise=False)
    # the same graph computed by hand: FP16 weights, FP32 arithmetic, FP16 Conv and Add outputs
    weights = {i.name: numpy_helper.to_array(i).astype(np.float16).astype(np.float32) for i in model.graph.initializer}
    pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((3, 2, 6, 6), np.float64)
    for i in range(3):
        for j in range(3):
            conv += np.einsum("nchw,oc->nohw", pad[:, :, i:i + 6, j:j + 6], weights["w"][:, :, i, j])
    conv = (conv + weights["b"][None, :, None, None]).astype(np.float32).astype(np.float16).astype(np.float32)
    added = (conv + weights["s"]).astype(np.float16).astype(np.float32)
    expected = 1 / (1 + np.exp(-added.astype(np.float64)))
    np.testing.assert_allclose(got, expected, atol=2e-6)
    fp32 = run(model, x)
    assert 1e-5 < float(np.abs(got - fp32).max()) < 5e-3  # rounded, by FP16's amount
    assert {n.op_type for n in proxy.graph.node} == {"Conv", "Add", "Sigmoid", "Cast"}


def test_int8_quantizes_the_graph_and_stays_near_fp32() -> None:
    model = conv_onnx()
    rng = np.random.default_rng(2)
    calibration = [rng.standard_normal((4, 2, 6, 6)).astype(np.float32) for _ in range(3)]
    quantized = quantize_int8(model, calibration, input_name="x")
    ops = [n.op_type for n in quantized.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    difference = float(np.abs(run(quantized, x) - run(model, x)).max())
    assert 0 < difference < 0.1  # sigmoid of 8-bit activations over a range of about 10: steps of ~0.04
    with pytest.raises(ExportError, match="int8 needs calibration inputs"):
        make_candidate(model, "int8", input_name="x")


# -- what a report unlocks -------------------------------------------------------------------------

def test_a_reduced_config_needs_its_report() -> None:
    with pytest.raises(ExportError, match="precision bf16 is written only with its parity report"):
        network_spec(TINY, backend="python", precision="bf16")
    config = to_proto(network_spec(TINY, backend="python", precision="bf16", parity="bf16 parity passed"))
    assert {k: parameters(config)[k] for k in ("precision", "parity", "runtime")} == \
        {"precision": "bf16", "parity": "bf16 parity passed", "runtime": "openvino"}
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(ExportError, match=f"Triton's {backend} backend is not offered it"):
            network_spec(TINY, backend=backend, precision="bf16", parity="passed")
    native = to_proto(network_spec(TINY, backend="onnxruntime", precision="int8", parity="int8 parity passed"))
    assert parameters(native)["precision"] == "int8"  # the quantized graph runs on Triton's ONNX Runtime as it is


def test_write_network_writes_a_passing_report_and_refuses_a_failing_one(tmp_path: Path) -> None:
    model = conv_onnx()
    with pytest.raises(ExportError, match=r"tiny_net: bf16 fails its parity against FP32 on 1 of 2 images: i1.nii.gz: Dice 0.9800 < 0.99"):
        write_network(TINY, model, tmp_path, serving=Serving(precision="bf16"), record={}, report=report("bf16", 1.0, 0.98))
    assert not (tmp_path / "tiny_net").exists()
    write_network(TINY, model, tmp_path, serving=Serving(precision="bf16"), record={}, report=report("bf16", 1.0, 0.995))
    folder = tmp_path / "tiny_net"
    saved = ParityReport.from_json((folder / "parity.json").read_text())
    assert saved.passed and [i.dice for i in saved.images] == [1.0, 0.995]
    assert parameters(read_config(folder / "config.pbtxt"))["precision"] == "bf16"
    record = json.loads((folder / "export.json").read_text())
    assert record["precision"] == "bf16" and record["parity_report"]["summary"].startswith("bf16 parity passed on 2 images")
    # exported again in FP32: the report and the precision go
    write_network(TINY, model, tmp_path, serving=Serving(), record={})
    assert not (folder / "parity.json").exists()
    assert "precision" not in parameters(read_config(folder / "config.pbtxt"))


def test_cpu_description_names_the_reduced_precision_instructions() -> None:
    from lesionseg.server.backend.runtimes import cpu_description, description_isa

    cpuinfo = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 sse2\n"
    assert cpu_description(cpuinfo) == "Some CPU (avx512_bf16, amx_bf16)"
    assert description_isa(cpu_description(cpuinfo)) == {"avx512_bf16", "amx_bf16"}
    assert cpu_description("model name : Old CPU\nflags : fpu sse2\n") == "Old CPU (no reduced-precision instructions)"
    assert description_isa("Old CPU (no reduced-precision instructions)") == frozenset()


def test_a_report_from_another_cpu_is_named_at_load(tmp_path: Path) -> None:
    """The network model warns (and still serves) when its report's CPU has other instructions."""
    from lesionseg.server.backend.runtimes import other_cpu_warning

    report = tmp_path / "parity.json"
    report.write_text(json.dumps({"cpu": "AMD EPYC (avx512_bf16, avx512_vnni)"}))
    assert other_cpu_warning(report, here="AMD EPYC 2 (avx512_bf16, avx512_vnni)") == ""
    warning = other_cpu_warning(report, here="Intel Xeon (avx512_bf16, avx512_vnni, amx_bf16)")
    assert "computed on AMD EPYC (avx512_bf16, avx512_vnni)" in warning and "export again" in warning
    report.write_text(json.dumps({"precision": "fp16"}))  # the GPU proxy names no CPU
    assert other_cpu_warning(report, here="Intel Xeon (amx_bf16)") == ""
    assert "no readable parity report" in other_cpu_warning(tmp_path / "missing.json")


def test_the_runner_refuses_an_unknown_precision(tmp_path: Path) -> None:
    from lesionseg.server.backend.runtimes import make_runner

    path = tmp_path / "m.onnx"
    path.write_bytes(conv_onnx().SerializeToString())
    with pytest.raises(UsageError, match="ONNX Runtime runs bf16 only as a quantized graph"):
        make_runner(path, runtime="onnxruntime", precision="bf16")
    bf16 = make_runner(path, runtime="openvino", precision="bf16")
    x = np.random.default_rng(3).standard_normal((1, 2, 6, 6)).astype(np.float32)
    assert float(np.abs(bf16.run(["y"], {"x": x})[0] - run(conv_onnx(), x)).max()) < 0.05


# -- real weights, real images ---------------------------------------------------------------------

@pytest.mark.realdata
@pytest.mark.slow
def test_int8_export_is_refused_with_its_numbers(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """INT8 of the t2s lesion network, calibrated on the real images, misses the bar: exit 1, the
    failing images and numbers in one line, and no repository written."""
    repo = tmp_path / "repo"
    code = main(["export", "sct-legacy", "--models-dir", str(shared / "sct_models"), "--repository", str(repo),
                 "--contrast", "t2s", "--precision", "int8", "--parity-data", str(shared / "sct_testing_data")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "not written: t2s: int8 fails its parity against FP32 on" in err
    assert "t2s/t2s.nii.gz: Dice 0." in err
    assert not repo.exists()


@pytest.mark.realdata
@pytest.mark.slow
def test_a_broken_calibration_is_refused(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Calibrated on a noise image with no cord in it, INT8 has no network inputs to calibrate on
    (the centerline network finds nothing, so the lesion network never runs): refused."""
    import nibabel as nib

    blank = tmp_path / "blank"
    blank.mkdir()
    noise = np.random.default_rng(0).uniform(0, 1, (40, 40, 20)).astype(np.float32)
    nib.save(nib.Nifti1Image(noise, np.diag([1.0, 1.0, 2.0, 1.0])), blank / "noise.nii.gz")
    code = main(["export", "sct-legacy", "--models-dir", str(shared / "sct_models"), "--repository", str(tmp_path / "repo"),
                 "--contrast", "t2s", "--precision", "int8", "--parity-data", str(shared / "sct_testing_data"),
                 "--calibration-data", str(blank)])
    assert code == 1
    assert "int8 needs calibration inputs" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()


@pytest.mark.realdata
@pytest.mark.slow
def test_fp16_proxy_report_for_the_gpu_variant(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    assert main(["export", "sct-legacy", "--models-dir", str(shared / "sct_models"), "--repository", str(repo),
                 "--contrast", "t2s", "--target", "gpu", "--precision", "fp16",
                 "--parity-data", str(shared / "sct_testing_data")]) == 0
    capsys.readouterr()
    saved = ParityReport.from_json((repo / "deepseg_lesion_t2s_net" / "parity.json").read_text())
    assert saved.passed and saved.precision == "fp16" and len(saved.images) == 5
    assert any("GPU run" in note for note in saved.notes)
    assert min(i.dice for i in saved.images) < 1.0  # the proxy does round
    gpu = parameters(read_config(repo / "deepseg_lesion_t2s_net" / "configs" / "gpu.pbtxt"))
    assert gpu["precision"] == "fp16" and gpu["parity"].startswith("fp16 parity passed on 5 images")
    assert "precision" not in parameters(read_config(repo / "deepseg_lesion_t2s_net" / "config.pbtxt"))  # the CPU stays FP32


@pytest.mark.server
@pytest.mark.realdata
@pytest.mark.slow
def test_bf16_export_serves_and_shows_its_report(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The BF16 t2_ax lesion network: the export's report passes on every real image; the embedded
    Triton serves it, `status --models` shows the precision and summary, and the served mask keeps
    the bar against the FP32 repository's on the same image. (t2_ax, not t2s: the t2s network's
    BF16 report is close to the bar, so whether it passes depends on the CPU's BF16 arithmetic.)"""
    from lesionseg.core.nifti import load_nifti
    from lesionseg.export.parity import compare_masks
    from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings, free_ports

    image = shared / "sct_testing_data" / "t2" / "t2_fake_lesion.nii.gz"
    masks = {}
    for precision in ("fp32", "bf16"):
        repo = tmp_path / precision
        args = ["export", "sct-legacy", "--models-dir", str(shared / "sct_models"), "--repository", str(repo), "--contrast", "t2_ax",
                "--precision", precision]
        assert main(args + (["--parity-data", str(shared / "sct_testing_data")] if precision != "fp32" else [])) == 0
        http, grpc, metrics = free_ports(3)
        with EmbeddedServer(ServerSettings(repository=repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
                                           startup_timeout=300)) as server:
            capsys.readouterr()
            assert main(["status", "--models", "--url", server.settings.grpc_url]) == 0
            status = capsys.readouterr().out
            out = tmp_path / f"out_{precision}"
            assert main(["deepseg-lesion", "-i", str(image), "-c", "t2_ax", "-ofolder", str(out), "-url", server.settings.grpc_url]) == 0
        masks[precision] = np.asanyarray(load_nifti(out / "t2_fake_lesion_lesionseg.nii.gz").data)
        net = next(line for line in status.splitlines() if "deepseg_lesion_t2_ax_net" in line)
        if precision == "bf16":
            assert "bf16" in net and "bf16 parity passed on" in net
            saved = ParityReport.from_json((repo / "deepseg_lesion_t2_ax_net" / "parity.json").read_text())
            assert saved.passed and "openvino" in saved.runtime
            # every real image is compared, or named in a note when the centerline finds no cord in it
            assert len(saved.images) + sum("finds no cord" in note for note in saved.notes) == 5
            assert saved.cpu and f"computed on {saved.cpu}" in net
            assert saved.data == str(shared / "sct_testing_data")
        else:
            assert "fp32" in net
    capsys.readouterr()
    assert masks["fp32"].any()
    served = compare_masks("t2_fake_lesion", masks["fp32"], masks["bf16"], voxel_mm3=1.0)
    assert served.failures(ParityBar()) == []


@pytest.mark.realdata
@pytest.mark.slow
def test_nnunet_bf16_report_on_the_test_task(shared: Path, tmp_path: Path) -> None:
    """The nnU-Net test task `seg_ms_lesion` (synthetic plans, random weights) with its fold
    network in BF16: the export computes the report on every real image and writes it."""
    pytest.importorskip("torch", reason="needs the export extra (torch)")
    from conftest import NNUNET_TASKS

    import synthetic_nnunet
    from lesionseg.export.nnunet import export_nnunet

    variant, options = NNUNET_TASKS["seg_ms_lesion"]
    folder = synthetic_nnunet.make_model(tmp_path / "model", variant)
    repo = tmp_path / "repo"
    result = export_nnunet(folder, repo, task="seg_ms_lesion", serving=Serving(precision="bf16"),
                           parity=ParityOptions(parity_data=shared / "sct_testing_data"), **options)
    assert result.report is not None and result.report.passed and len(result.report.images) == 5
    for network in result.plan.networks:
        saved = ParityReport.from_json((repo / network / "parity.json").read_text())
        assert saved == ParityReport.from_json(result.report.to_json())
        config = parameters(read_config(repo / network / "config.pbtxt"))
        assert (config["precision"], config["runtime"]) == ("bf16", "openvino")


@pytest.mark.realdata
@pytest.mark.slow
def test_nnunet_bf16_report_on_a_trained_network(shared: Path, tmp_path: Path) -> None:
    """A network trained briefly on ../shared's cord masks (tests/trained_nnunet.py) segments the
    cord compactly, as a real model does, and its BF16 fold network passes the report (Dice >=
    0.99, lesion counts equal, volume within 2 %) on every real image; random weights' fragmented
    masks cannot keep their lesion counts (bench/README.md)."""
    pytest.importorskip("torch", reason="needs the export extra (torch)")
    import synthetic_nnunet
    import trained_nnunet
    from scipy import ndimage

    from lesionseg.core.nifti import load_nifti
    from lesionseg.export.nnunet import export_nnunet

    variant = synthetic_nnunet.Variant(name="trained", features=(8, 16, 32, 64), patch=(32, 64, 64), spacing=(1.0, 1.0, 1.0),
                                       folds=(0,), seed=5)
    folder = synthetic_nnunet.make_model(tmp_path / "model", variant)
    losses = trained_nnunet.train_model(folder, shared / "sct_testing_data", steps=400, patch=(32, 64, 64))
    assert losses["0"] < 0.5
    repo = tmp_path / "repo"
    result = export_nnunet(folder, repo, task="trained", serving=Serving(precision="bf16"),
                           parity=ParityOptions(parity_data=shared / "sct_testing_data"))
    assert result.report is not None and result.report.passed and len(result.report.images) == 5, result.report.failure_line()
    # compact: the fp32 mask of t2s is the cord, in one piece
    from lesionseg.core.orientation import reorientation, sct_to_nib
    from lesionseg.server.pipelines import nnunet
    import onnxruntime as ort

    session = ort.InferenceSession(str(repo / "trained_fold0_net" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    image = load_nifti(shared / "sct_testing_data" / "t2s" / "t2s.nii.gz")
    orient = reorientation(image.affine, image.data.shape, sct_to_nib(result.plan.orientation))
    data, props = nnunet.preprocess(orient.forward(image.data).astype(np.float32), orient.forward_spacing(image.spacing), result.plan)
    logits = nnunet.sliding_window(data, result.plan, lambda x: session.run(None, {"input": x})[0])
    seg = orient.backward(nnunet.postprocess(logits, props, result.plan)[0]) > 0
    cord = load_nifti(shared / "sct_testing_data" / "t2s" / "t2s_seg.nii.gz").data > 0
    dice = 2 * (seg & cord).sum() / (seg.sum() + cord.sum())
    pieces = ndimage.label(seg, np.ones((3, 3, 3)))[1]
    print(f"trained network on t2s: Dice {dice:.3f} against the cord mask, {pieces} piece(s); {result.report.summary()}")
    assert dice >= 0.8 and pieces <= 2
