"""Reduced-precision networks: what runs a network in BF16, INT8 or (as a CPU proxy) FP16, and the
real images its parity report is computed on.

A precision other than FP32 is only written into a repository with a passing parity report
(`lesionseg.export.parity`); the pipeline-specific code that computes the report lives beside
each export (`lesionseg.export.legacy_precision`). This module knows the candidates:

- **bf16**: the FP32 graph, compiled by OpenVINO's CPU plugin with `INFERENCE_PRECISION_HINT`
  bf16 (AVX512-BF16 here). OpenVINO keeps what it cannot run in BF16 in FP32 by itself.
- **int8**: a QDQ graph from ONNX Runtime's static quantization (per-channel symmetric INT8
  weights, unsigned INT8 activations, MinMax ranges), calibrated on the network's own inputs as
  the FP32 pipeline produces them from real images; served on OpenVINO (VNNI kernels), FP32
  around the quantized operators.
- **fp16** (GPU, TensorRT): this CPU has no FP16 arithmetic (no AVX512-FP16: OpenVINO's f16 hint
  ran BF16 here, with results bit-identical to the bf16 hint), so the parity report uses a stated
  proxy: the FP32 graph with every weight and every intermediate tensor rounded to FP16, as
  TensorRT stores them in an FP16 engine, normalisation and sigmoid/softmax outputs kept FP32, run
  by ONNX Runtime. A GPU run has to confirm it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from lesionseg.core.enums import Precision
from lesionseg.core.errors import ExportError, InputError, UsageError
from lesionseg.core.paths import user_path
from lesionseg.export.parity import ImageParity, ParityBar, ParityReport, compare_masks
from lesionseg.server.backend.runtimes import PARITY_REPORT, cpu_description

logger = logging.getLogger(__name__)

PRECISIONS = tuple(Precision)
#: A reduced network's parity report, in its model folder next to export.json.
REPORT_NAME = PARITY_REPORT
#: Operators whose outputs the FP16 proxy keeps in FP32 (TensorRT runs them in FP32 when asked,
#: and an FP16 engine that does not would be a different engine).
FP16_KEEP_FP32 = frozenset({"InstanceNormalization", "BatchNormalization", "LayerNormalization", "Softmax", "Sigmoid"})
#: File-name parts of derived files (masks, labels, centerlines) that are not images to segment.
_DERIVED = re.compile(r"^(seg|label|labels|mask|centerline|ctr|lesion-manual|dseg)([-.]|$)", re.IGNORECASE)

Predict = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParityOptions:
    """Where a reduced precision's parity report (and INT8 calibration) gets its real images.

    Attributes:
        parity_data: folder searched (recursively) for the real NIfTI images of the parity report.
        calibration_data: int8: folder of the images whose network inputs calibrate the
            quantization (default: parity_data, which the report then says).
        bar: what every image of the report must meet.
    """

    parity_data: Path | None = None
    calibration_data: Path | None = None
    bar: ParityBar = dataclasses.field(default_factory=ParityBar)

    def check(self, precision: str) -> None:
        """Raise UsageError unless these options can back `precision`."""
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
        if precision != "fp32" and self.parity_data is None:
            raise UsageError(f"--precision {precision} is written only with its parity report: give --parity-data DIR, "
                             "a folder of real images (e.g. ../shared/sct_testing_data)")
        if self.calibration_data is not None and precision != "int8":
            raise UsageError("--calibration-data is for --precision int8")


def is_derived(path: Path) -> bool:
    """Whether a NIfTI file name is a mask, label or centerline rather than an image
    ("t2_seg-manual", "t2_fake_lesion_lesion_seg", "t2_centerline-manual", "sub-01_T2w_label-SC_mask")."""
    stem = path.name.split(".nii")[0]
    return any(_DERIVED.match(part) for part in stem.split("_")[1:])


def find_images(folder: Path) -> list[Path]:
    """The images (not masks or labels) under `folder`, sorted by their path relative to it.

    Raises:
        InputError: `folder` does not exist or holds no image.
    """
    if not folder.is_dir():
        raise InputError(f"{folder}: parity/calibration image folder does not exist")
    found = sorted((p for p in folder.rglob("*.nii*") if p.name.endswith((".nii", ".nii.gz")) and not is_derived(p)),
                   key=lambda p: p.relative_to(folder).as_posix())
    if not found:
        raise InputError(f"{folder}: no NIfTI image (*.nii, *.nii.gz that is not a mask or label) found")
    return found


def oriented_image(path: Path, orientation: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """A NIfTI image as a pipeline model receives it: (x, y, z) float32 in `orientation` (SCT's
    letters, e.g. "RPI"), and its voxel size in mm along those axes."""
    from lesionseg.core.nifti import load_nifti
    from lesionseg.core.orientation import reorientation, sct_to_nib

    volume = load_nifti(path)
    orient = reorientation(volume.affine, volume.data.shape, sct_to_nib(orientation))
    data = np.ascontiguousarray(orient.forward(volume.data), dtype=np.float32)
    return data, tuple(float(s) for s in orient.forward_spacing(volume.spacing))


def calibration_images(options: ParityOptions) -> tuple[list[Path], str]:
    """The INT8 calibration images (`calibration_data`, default `parity_data`) and the report's
    note on them: how many, where, and how many are also parity images."""
    folder = options.calibration_data or options.parity_data
    assert folder is not None  # noqa: S101 - ParityOptions.check requires parity_data
    images = find_images(folder)
    overlap = {p.resolve() for p in images} & {p.resolve() for p in find_images(options.parity_data or folder)}
    note = f"{len(images)} images in {folder}" + (f"; {len(overlap)} of them are also images of this report" if overlap else "")
    return images, note


def assemble_report(precision: str, candidate: Candidate, images: Sequence[ImageParity], notes: Sequence[str],
                    options: ParityOptions, *, reference: str) -> ParityReport:
    """The ParityReport of `candidate` against FP32 ONNX Runtime running `reference` (e.g. "every network")."""
    versions = runtime_versions()
    if candidate.proxy is not None:
        notes = [*notes, "FP16 proxy run on the CPU: a GPU run of the TensorRT FP16 engine has to confirm it"]
        cpu = ""
    else:
        cpu = cpu_description()
        notes = [*notes, "reduced-precision kernels differ between CPU instruction sets (the legacy t2s BF16 report passed "
                         "on an AVX512-BF16 CPU and failed on an AMX one): the report holds for servers whose CPU has the "
                         "instructions of `cpu`; export again on the serving CPU when they differ"]
    return ParityReport(precision=precision, runtime=candidate.description,
                        reference=f"onnxruntime {versions['onnxruntime']} FP32, {reference}", images=images, bar=options.bar,
                        notes=tuple(notes), data=str(user_path(options.parity_data)) if options.parity_data else "", cpu=cpu)


def compare_images(options: ParityOptions, masks: Callable[[Path], "tuple[np.ndarray, np.ndarray, float] | str"], *,
                   label: str) -> tuple[list[ImageParity], list[str]]:
    """The parity of every image of `options.parity_data`: `masks(path)` gives (FP32 mask,
    candidate mask, voxel volume in mm3), or the reason there is nothing to compare, which becomes
    a note naming the image."""
    images: list[ImageParity] = []
    notes: list[str] = []
    assert options.parity_data is not None  # noqa: S101 - ParityOptions.check requires it
    for path in find_images(options.parity_data):
        name = path.relative_to(options.parity_data).as_posix()
        found = masks(path)
        if isinstance(found, str):
            notes.append(f"{name}: {found}")
            continue
        reference, got, voxel_mm3 = found
        images.append(compare_masks(name, reference, got, voxel_mm3=voxel_mm3))
        logger.info("%s %s: Dice %.4f", label, name, images[-1].dice)
    return images, notes


def runtime_versions() -> dict[str, str]:
    """The versions of the runtimes a report's numbers came from."""
    import onnxruntime

    versions = {"onnxruntime": onnxruntime.__version__}
    try:
        import openvino

        versions["openvino"] = openvino.__version__.split("-")[0]
    except ImportError:  # pragma: no cover - openvino is a main dependency
        pass
    return versions


@dataclasses.dataclass(frozen=True, kw_only=True)
class Candidate:
    """A network at a reduced precision.

    Attributes:
        precision: "bf16", "int8" or "fp16".
        model: the onnx.ModelProto the repository serves as `model.onnx`: the FP32 graph (bf16,
            fp16: the precision is a runtime setting) or the quantized graph (int8).
        runtime: what the python backend runs it with ("openvino").
        runner_precision: the precision the runner is asked for (`runtimes.RUNNER_PRECISION`).
        description: what ran the candidate in the report, e.g. "openvino 2026.4.1 INFERENCE_PRECISION_HINT bf16".
        proxy: the graph the report ran instead of `model` (fp16: the rounding proxy), or None.
    """

    precision: str
    model: Any
    runtime: str
    runner_precision: str
    description: str
    proxy: Any = None


def make_candidate(model: Any, precision: str, *, input_name: str, calibration: Sequence[np.ndarray] = ()) -> Candidate:
    """The candidate of `model` (an FP32 onnx.ModelProto) at `precision`; int8 needs `calibration`,
    a sequence of (N, ...) float32 network inputs."""
    versions = runtime_versions()
    if precision == "bf16":
        return Candidate(precision="bf16", model=model, runtime="openvino", runner_precision="bf16",
                         description=f"openvino {versions['openvino']} INFERENCE_PRECISION_HINT bf16")
    if precision == "int8":
        if not calibration:
            raise ExportError("int8 needs calibration inputs: none were produced from the calibration images")
        quantized = quantize_int8(model, calibration, input_name=input_name)
        items = sum(len(batch) for batch in calibration)
        return Candidate(precision="int8", model=quantized, runtime="openvino", runner_precision="fp32",
                         description=f"onnxruntime {versions['onnxruntime']} static QDQ quantization (per-channel INT8 weights, "
                                     f"UINT8 activations, MinMax over {items} calibration inputs), run by openvino {versions['openvino']}")
    if precision == "fp16":
        return Candidate(precision="fp16", model=model, runtime="onnxruntime", runner_precision="fp32", proxy=fp16_proxy(model),
                         description=f"FP16 proxy on the CPU: weights and intermediate tensors rounded to FP16 "
                                     f"(normalisation and sigmoid/softmax outputs FP32), onnxruntime {versions['onnxruntime']}")
    raise UsageError(f"no reduced-precision candidate for {precision!r}")


def candidate_predict(candidate: Candidate, folder: Path, *, input_name: str, output_name: str, batch: int) -> Predict:
    """A batched predict function running `candidate` as the report measures it (the graph is
    written to `folder`)."""
    from lesionseg.server.backend.runtimes import make_runner

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"candidate_{candidate.precision}.onnx"
    path.write_bytes((candidate.proxy if candidate.proxy is not None else candidate.model).SerializeToString())
    if candidate.proxy is not None:
        runner = _unoptimised_session(path)  # keeps every rounding Cast pair
    else:
        runner = make_runner(path, runtime=candidate.runtime, precision=candidate.runner_precision)
    return batched(lambda x: runner.run([output_name], {input_name: x})[0], batch)


def fp32_predict(model: Any, folder: Path, name: str, *, input_name: str, output_name: str, batch: int) -> Predict:
    """A batched predict function running `model` in FP32 on ONNX Runtime (the reference)."""
    from lesionseg.server.backend.runtimes import make_session

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_fp32.onnx"
    path.write_bytes(model.SerializeToString())
    session = make_session(path)
    return batched(lambda x: session.run([output_name], {input_name: x})[0], batch)


def batched(run: Callable[[np.ndarray], np.ndarray], batch: int) -> Predict:
    """`run` applied to consecutive slices of at most `batch` items, concatenated."""
    return lambda x: np.concatenate([run(np.ascontiguousarray(x[i:i + batch])) for i in range(0, len(x), batch)])


def recording(predict: Predict, into: list[np.ndarray]) -> Predict:
    """`predict` that also appends a copy of every input it is given to `into`."""
    def run(x: np.ndarray) -> np.ndarray:
        into.append(np.array(x, np.float32, copy=True))
        return predict(x)
    return run


def _unoptimised_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def quantize_int8(model: Any, calibration: Sequence[np.ndarray], *, input_name: str) -> Any:
    """`model` statically quantized to INT8 (QDQ format, per-channel weights) with activation
    ranges from `calibration` (MinMax). Returns an onnx.ModelProto."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        """The calibration inputs one item at a time."""

        def __init__(self, batches: Iterable[np.ndarray]) -> None:
            self.items = iter([{input_name: batch[i:i + 1]} for batch in batches for i in range(len(batch))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="lesionseg-int8-") as tmp:
        source, prepared, target = Path(tmp, "fp32.onnx"), Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        source.write_bytes(model.SerializeToString())
        # ONNX Runtime's symbolic shape inference stops at the Keras graphs' Transposes: ONNX's own suffices
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(target), Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        quantized = onnx.load(str(target))
    onnx.checker.check_model(quantized)
    return quantized


def fp16_proxy(model: Any) -> Any:
    """The FP16 proxy of an FP32 onnx.ModelProto: every float initializer rounded to FP16 and
    every node output (except those of FP16_KEEP_FP32 operators) passed through a
    Cast(FLOAT16) -> Cast(FLOAT) pair, so each tensor between layers holds only FP16 values while
    the arithmetic inside an operator stays FP32 (TensorRT's FP16 tactics accumulate in FP32 too)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proxy = onnx.ModelProto.FromString(model.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(proxy)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    graph = proxy.graph
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            values = numpy_helper.to_array(init)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(values.astype(np.float16).astype(np.float32), init.name))
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type in FP16_KEEP_FP32:
            continue
        for k, name in enumerate(list(node.output)):
            if not name or types.get(name) != TensorProto.FLOAT:  # shapes and indices stay as they are
                continue
            wide = f"{name}__fp32"
            node.output[k] = wide
            nodes.append(helper.make_node("Cast", [wide], [f"{name}__fp16"], to=TensorProto.FLOAT16, name=f"{name}__to_fp16"))
            nodes.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT, name=f"{name}__to_fp32"))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # intermediate shapes/types changed names; ONNX Runtime infers them
    onnx.checker.check_model(proxy)
    return proxy
