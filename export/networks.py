"""Write an exported ONNX network into a Triton repository: `<name>/1/model.onnx`, its entry
(`lesionseg.server.repository.networks`) and `<name>/export.json` (where it came from, its
parity record and checksum)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lesionseg.core.errors import UsageError
from lesionseg.core.files import atomic_write_bytes, atomic_write_text, sha256
from lesionseg.server.repository.gpu import GpuOptions
from lesionseg.server.repository.networks import BACKENDS, RUNTIMES, WEIGHTS, NetworkEntry, resolve_runtime, write_network_entry

RECORD_NAME = "export.json"
TARGETS = ("cpu", "gpu")


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
    """

    target: str = "cpu"
    backend: str = "python"
    runtime: str = "auto"
    gpu: GpuOptions = dataclasses.field(default_factory=GpuOptions)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise UsageError(f"unknown target {self.target!r} (choose from {', '.join(TARGETS)})")
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown serving backend {self.backend!r} (choose from {', '.join(BACKENDS)})")
        if self.runtime not in ("auto", *RUNTIMES):
            raise UsageError(f"unknown network runtime {self.runtime!r} (choose from {', '.join(RUNTIMES)})")
        if self.backend != "python" and self.runtime not in ("auto", "onnxruntime"):
            raise UsageError(f"--runtime {self.runtime} is for the python backend; on NGC images use --backend {self.runtime}")

    @property
    def gpu_options(self) -> GpuOptions | None:
        return self.gpu if self.target == "gpu" else None


def write_network(entry: NetworkEntry, model: Any, repository: Path, *, serving: Serving, record: dict[str, Any]) -> Path:
    """Write `model` (an onnx.ModelProto) and its entries; `record` (source, parity) goes to export.json.

    Returns:
        The path of `model.onnx`.
    """
    folder = repository / entry.name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    target = atomic_write_bytes(version / WEIGHTS, model.SerializeToString())
    write_network_entry(entry, repository, backend=serving.backend, gpu=serving.gpu_options, runtime=serving.runtime)
    runtime = resolve_runtime(entry.name, serving.runtime)
    full_record = {**record, "onnx_sha256": sha256(target), "backend": serving.backend,
                   "runtime": runtime if serving.backend == "python" else serving.backend,
                   "target": serving.target}
    if serving.gpu_options is not None:
        full_record["gpu"] = dataclasses.asdict(serving.gpu)
    atomic_write_text(folder / RECORD_NAME, json.dumps(full_record, indent=2, sort_keys=True) + "\n")
    return target
