"""Repository entries of the networks every model family calls: `<name>/config.pbtxt` (and, on
the embedded server, the thin `1/model.py`), batched dynamically along the first axis.

Two serving variants of the same network: `python` (the embedded server, which has no ONNX
Runtime backend: a Python-backend model holding an onnxruntime session,
`lesionseg.server.backend.onnx_network`) and `onnxruntime` (Triton's own backend, as in NGC
images). The weights (`1/model.onnx`) are written by `lesionseg.export.networks`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from lesionseg.core.errors import ExportError
from lesionseg.server.backend.onnx_network import OnnxNetModel
from lesionseg.server.repository.modelconfig import DynamicBatching, ModelSpec, TensorSpec, write_config
from lesionseg.server.repository.pymodel import write_model_py

BACKENDS = ("python", "onnxruntime")
#: CPU serving defaults, chosen by measurement (bench/tuning.py, numbers in bench/README.md): two
#: instances of every network, each ONNX Runtime session on one intra-op thread whose idle workers
#: sleep instead of spinning. On the 2-core machine this beat one instance using every core by
#: 1.4x (legacy cohort) and 1.09x (nnU-Net) because two requests' networks run side by side
#: without oversubscribing the cores.
CPU_NETWORK_INSTANCES = 2
CPU_INTRA_OP_THREADS = 1
#: The file the weights live in, in the network's version folder.
WEIGHTS = "model.onnx"


@dataclasses.dataclass(frozen=True, kw_only=True)
class NetworkEntry:
    """A network model entry: tensor names and per-item shapes (batch axis excluded)."""

    name: str
    input_name: str
    output_names: Sequence[str]
    input_dims: tuple[int, ...]
    output_dims: tuple[int, ...]
    max_batch_size: int = 16
    queue_delay_us: int = 2000
    instance_count: int = 0  # 0: CPU_NETWORK_INSTANCES on CPU, 1 on GPU


def network_spec(entry: NetworkEntry, *, backend: str, instance_kind: str = "KIND_CPU") -> ModelSpec:
    if backend not in BACKENDS:
        raise ExportError(f"unknown serving backend {backend!r} (choose from {', '.join(BACKENDS)})")
    cpu = instance_kind == "KIND_CPU"
    parameters: dict[str, str] = {}
    if backend == "python":
        # the python backend's entry point is model.py; the weights it loads must be there too
        parameters["weights"] = WEIGHTS
        if cpu:
            parameters.update(intra_op_threads=str(CPU_INTRA_OP_THREADS), ort_spinning="0")
    elif cpu:
        parameters["intra_op_thread_count"] = str(CPU_INTRA_OP_THREADS)  # Triton's onnxruntime backend
    return ModelSpec(
        name=entry.name,
        backend=backend,
        max_batch_size=entry.max_batch_size,
        inputs=[TensorSpec(name=entry.input_name, dtype="FP32", dims=entry.input_dims)],
        outputs=[TensorSpec(name=n, dtype="FP32", dims=entry.output_dims) for n in entry.output_names],
        instance_count=entry.instance_count or (CPU_NETWORK_INSTANCES if cpu else 1),
        instance_kind=instance_kind,
        dynamic_batching=DynamicBatching(max_queue_delay_us=entry.queue_delay_us),
        parameters=parameters,
    )


def write_network_entry(entry: NetworkEntry, repository: Path, *, backend: str, instance_kind: str = "KIND_CPU") -> Path:
    """Write a network's config (and, for the python backend, its thin model.py); no weights."""
    path = write_config(network_spec(entry, backend=backend, instance_kind=instance_kind), repository)
    stale = repository / entry.name / "1" / "model.py"
    if backend == "python":
        write_model_py(repository, entry.name, OnnxNetModel)
    elif stale.exists():
        stale.unlink()
    return path
