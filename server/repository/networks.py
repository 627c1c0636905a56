"""Repository entries of the networks every model family calls: `<name>/config.pbtxt` (and, on
the embedded server, the thin `1/model.py`), batched dynamically along the first axis.

`config.pbtxt` runs the network on the CPU, with one of two backends: `python` (the embedded
server, which has no ONNX Runtime backend: a Python-backend model holding an onnxruntime session,
`lesionseg.server.backend.onnx_network`) or `onnxruntime` (Triton's own backend, as in NGC
images). With `gpu` options the same folder also gets `configs/gpu.pbtxt`
(`lesionseg.server.repository.gpu`), chosen by `tritonserver --model-config-name=gpu`. The weights
(`1/model.onnx`) are written by `lesionseg.export.networks`.
"""

from __future__ import annotations

from pathlib import Path

from lesionseg.core.errors import ExportError
from lesionseg.server.backend.onnx_network import OnnxNetModel
from lesionseg.server.repository.entry import NetworkEntry
from lesionseg.server.repository.gpu import GPU_VARIANT, PLAN, TENSORRT_VARIANT, GpuOptions, gpu_network_spec
from lesionseg.server.repository.modelconfig import DynamicBatching, ModelSpec, TensorSpec, config_path, write_config
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


def network_spec(entry: NetworkEntry, *, backend: str) -> ModelSpec:
    """The CPU `config.pbtxt` of a network on `backend` ("python" or "onnxruntime")."""
    if backend not in BACKENDS:
        raise ExportError(f"unknown serving backend {backend!r} (choose from {', '.join(BACKENDS)})")
    parameters: dict[str, str] = {}
    if backend == "python":
        # the python backend's entry point is model.py; the weights it loads must be there too
        parameters["weights"] = WEIGHTS
        parameters.update(intra_op_threads=str(CPU_INTRA_OP_THREADS), ort_spinning="0")
    else:
        parameters["intra_op_thread_count"] = str(CPU_INTRA_OP_THREADS)  # Triton's onnxruntime backend
    return ModelSpec(
        name=entry.name,
        backend=backend,
        max_batch_size=entry.max_batch_size,
        inputs=[TensorSpec(name=entry.input_name, dtype="FP32", dims=entry.input_dims)],
        outputs=[TensorSpec(name=n, dtype="FP32", dims=entry.output_dims) for n in entry.output_names],
        instance_count=entry.instance_count or CPU_NETWORK_INSTANCES,
        instance_kind="KIND_CPU",
        dynamic_batching=DynamicBatching(max_queue_delay_us=entry.queue_delay_us),
        parameters=parameters,
    )


def write_network_entry(entry: NetworkEntry, repository: Path, *, backend: str, gpu: GpuOptions | None = None) -> Path:
    """Write a network's `config.pbtxt` (and, for the python backend, its thin model.py) and, with
    `gpu`, its `configs/gpu.pbtxt`; no weights.

    What an earlier export left that no longer fits is removed: the GPU variant when `gpu` is None,
    and always a TensorRT engine with its `configs/tensorrt.pbtxt`, built from the weights being
    replaced (`lesionseg export tensorrt` builds it again).

    Returns:
        The path of `config.pbtxt`.
    """
    path = write_config(network_spec(entry, backend=backend), repository)
    stale = [config_path(repository, entry.name, TENSORRT_VARIANT), repository / entry.name / "1" / PLAN]
    if backend == "python":
        write_model_py(repository, entry.name, OnnxNetModel)
    else:
        stale.append(repository / entry.name / "1" / "model.py")
    if gpu is not None:
        write_config(gpu_network_spec(entry, gpu), repository, variant=GPU_VARIANT)
    else:
        stale.append(config_path(repository, entry.name, GPU_VARIANT))
    for old in stale:
        old.unlink(missing_ok=True)
    return path
