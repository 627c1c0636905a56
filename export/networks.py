"""Write an exported ONNX network into a Triton repository: `<name>/1/model.onnx`, its entry
(`lesionseg.server.repository.networks`) and `<name>/export.json` (where it came from, its
parity record and checksum)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lesionseg.core.enums import Backend, Precision, Runtime, Target, parse
from lesionseg.core.errors import ExportError, UsageError
from lesionseg.core.files import atomic_write_bytes, atomic_write_text, sha256
from lesionseg.export.parity import ParityReport
from lesionseg.export.precision import REPORT_NAME
from lesionseg.server.repository.gpu import GpuOptions
from lesionseg.server.repository.networks import (
    PRECISION_RUNTIMES,
    WEIGHTS,
    NetworkEntry,
    resolve_runtime,
    write_network_entry,
)

RECORD_NAME = "export.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Serving:
    """How an export serves its networks.

    Attributes:
        target: "cpu" writes `config.pbtxt` only; "gpu" adds `configs/gpu.pbtxt` (Triton's
            onnxruntime backend on the GPU with TensorRT, `tritonserver --model-config-name=gpu`).
        backend: the CPU config's backend: "python" (the embedded server) or Triton's own
            "onnxruntime" / "openvino" (NGC images).
        runtime: what the python backend runs the network with: "onnxruntime", "openvino" or
            "auto" (each network's measured choice, `networks.resolve_runtime`).
        gpu: the GPU variant's options (target "gpu" only).
        precision: the networks' precision (`lesionseg.export.precision.PRECISIONS`): "bf16" and
            "int8" reduce the CPU config's networks, "fp16" the GPU variant's (gpu.precision);
            each export writes a reduced network only with its passing parity report.
    """

    target: Target = Target.CPU
    backend: Backend = Backend.PYTHON
    runtime: Runtime = Runtime.AUTO
    gpu: GpuOptions = dataclasses.field(default_factory=GpuOptions)
    precision: Precision = Precision.FP32

    def __post_init__(self) -> None:
        for name, kind, what in (("target", Target, "target"), ("backend", Backend, "serving backend"),
                                 ("runtime", Runtime, "network runtime"), ("precision", Precision, "precision")):
            object.__setattr__(self, name, parse(kind, getattr(self, name), what))
        if self.backend != Backend.PYTHON and self.runtime not in (Runtime.AUTO, Runtime.ONNXRUNTIME):
            raise UsageError(f"--runtime {self.runtime} is for the python backend; on NGC images use --backend {self.runtime}")
        if self.precision == Precision.FP16 and (self.target != Target.GPU or self.gpu.precision != Precision.FP16):
            raise UsageError("--precision fp16 is TensorRT's on the GPU: it needs --target gpu (this CPU has no FP16 arithmetic)")
        if self.precision in PRECISION_RUNTIMES and self.runtime not in (Runtime.AUTO, PRECISION_RUNTIMES[self.precision]):
            raise UsageError(f"--precision {self.precision} runs on {PRECISION_RUNTIMES[self.precision]} (what its parity "
                             f"report measures), not --runtime {self.runtime}")
        if self.precision == Precision.BF16 and self.backend != Backend.PYTHON:
            raise UsageError(f"--precision bf16 runs on the python backend's OpenVINO runtime, not Triton's {self.backend} backend")

    @property
    def gpu_options(self) -> GpuOptions | None:
        return self.gpu if self.target == Target.GPU else None

    def require_fp32(self, kind: str) -> None:
        """Raise UsageError for a reduced precision on an export `kind` that computes no parity report."""
        if self.precision != Precision.FP32:
            raise UsageError(f"--precision {self.precision} is not offered for {kind} exports: they compute no parity report "
                             "yet (sct-legacy does)")


def write_network(entry: NetworkEntry, model: Any, repository: Path, *, serving: Serving, record: dict[str, Any],
                  report: ParityReport | None = None) -> Path:
    """Write `model` (an onnx.ModelProto) and its entries; `record` (source, parity) goes to export.json.

    With a passing `report` the network is written at `report.precision` (`model` is then the
    candidate's graph) and the report goes to `<network>/parity.json`; without one, in FP32 (a
    report an earlier export left is removed).

    Returns:
        The path of `model.onnx`.
    Raises:
        ExportError: `report` fails its bar.
    """
    if report is not None and not report.passed:
        raise ExportError(f"{entry.name}: {report.failure_line()}")
    precision = report.precision if report is not None else "fp32"
    folder = repository / entry.name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    target = atomic_write_bytes(version / WEIGHTS, model.SerializeToString())
    summary = report.summary() if report is not None else ""
    gpu = serving.gpu_options
    if gpu is not None and gpu.precision != precision:  # a network without its FP16 report stays FP32 on the GPU too
        gpu = dataclasses.replace(gpu, precision="fp32")
    write_network_entry(entry, repository, backend=serving.backend, gpu=gpu, runtime=serving.runtime,
                        precision=precision, parity=summary)
    runtime = resolve_runtime(entry.name, serving.runtime, precision if precision != "fp16" else "fp32")
    full_record = {**record, "onnx_sha256": sha256(target), "backend": serving.backend,
                   "runtime": runtime if serving.backend == "python" else serving.backend,
                   "target": serving.target, "precision": precision}
    if report is not None:
        atomic_write_text(folder / REPORT_NAME, report.to_json())
        full_record["parity_report"] = {"file": REPORT_NAME, "summary": summary}
    else:
        (folder / REPORT_NAME).unlink(missing_ok=True)
    if gpu is not None:
        full_record["gpu"] = dataclasses.asdict(gpu)
    atomic_write_text(folder / RECORD_NAME, json.dumps(full_record, indent=2, sort_keys=True) + "\n")
    return target
