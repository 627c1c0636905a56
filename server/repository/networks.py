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

from lesionseg.core.enums import Backend, Precision, Runtime
from lesionseg.core.errors import ExportError
from lesionseg.server.backend.onnx_network import OnnxNetModel
from lesionseg.server.repository.entry import NetworkEntry
from lesionseg.server.repository.gpu import GPU_VARIANT, PLAN, TENSORRT_VARIANT, GpuOptions, gpu_network_spec
from lesionseg.server.repository.modelconfig import DynamicBatching, ModelSpec, TensorSpec, config_path, write_config
from lesionseg.server.repository.pymodel import write_model_py

#: python: the embedded server's Python-backend model running the network with a `runtime`
#: (lesionseg.server.backend.runtimes); onnxruntime / openvino: Triton's own backends (NGC images).
BACKENDS = tuple(Backend)
RUNTIMES = (Runtime.ONNXRUNTIME, Runtime.OPENVINO)
#: The CPU runtime of each network when none is asked for ("auto"), chosen by measurement
#: (bench/roofline.py, one thread, FP32; the numbers are in bench/README.md): OpenVINO runs the
#: legacy 3D lesion networks faster than ONNX Runtime with the same masks on every real image
#: (tests/test_runtimes.py); the 2D centerline networks are faster on ONNX Runtime; nnU-Net tiles
#: are faster on OpenVINO but miss the 1e-3 probability bar against ONNX Runtime on random
#: weights, so they stay on ONNX Runtime. First matching prefix wins.
MEASURED_RUNTIMES = (("deepseg_lesion_", Runtime.OPENVINO),)
#: What runs a reduced CPU precision on the python backend: the runtime its parity report ran
#: (lesionseg.export.precision): BF16 arithmetic is OpenVINO's; the INT8 graph runs faster on
#: OpenVINO's VNNI kernels than on ONNX Runtime (bench/README.md, "Reduced precision").
PRECISION_RUNTIMES = {Precision.BF16: Runtime.OPENVINO, Precision.INT8: Runtime.OPENVINO}


def resolve_runtime(network: str, runtime: str = Runtime.AUTO, precision: str = Precision.FP32) -> Runtime:
    """`runtime`, or for "auto" the measured CPU runtime of `network` (MEASURED_RUNTIMES; ONNX
    Runtime where no prefix matches); a reduced `precision` runs on PRECISION_RUNTIMES's.

    Raises:
        ExportError: `runtime` is not the one a reduced `precision` runs on.
    """
    if precision in PRECISION_RUNTIMES:
        needed = PRECISION_RUNTIMES[precision]
        if runtime not in (Runtime.AUTO, needed):
            raise ExportError(f"--precision {precision} runs on {needed} (what its parity report measures), not --runtime {runtime}")
        return needed
    if runtime != Runtime.AUTO:
        return Runtime(runtime)
    return next((measured for prefix, measured in MEASURED_RUNTIMES if network.startswith(prefix)), Runtime.ONNXRUNTIME)
#: CPU serving defaults, chosen by measurement (bench/memory.py and bench/tuning.py, numbers in
#: bench/README.md, "Server memory"): every network runs the batch Triton forms CPU_RUN_BATCH item
#: at a time, with no ONNX Runtime memory pattern, on CPU_NETWORK_INSTANCES instances of
#: CPU_INTRA_OP_THREADS intra-op threads whose idle workers sleep instead of spinning; an entry
#: may set its own instances and threads (the legacy networks: one instance at two threads, see
#: `lesionseg.server.repository.legacy.network_entry`). A network's working memory grows with the
#: items it runs at once while its time per item does not shrink beyond one on the CPU, and with a
#: memory pattern ONNX Runtime's arena keeps one block for all of a shape's intermediate tensors
#: beside the per-tensor ones: these settings hold the same masks in a fraction of the memory at
#: the same throughput. `LESIONSEG_ORT_THREADS`, `LESIONSEG_RUN_BATCH` and
#: `LESIONSEG_ORT_MEM_PATTERN`, set for the server, override the python backend's configs.
CPU_NETWORK_INSTANCES = 2
CPU_INTRA_OP_THREADS = 1
CPU_RUN_BATCH = 1
CPU_MEMORY_PATTERN = False
#: The file the weights live in, in the network's version folder.
WEIGHTS = "model.onnx"


def network_spec(entry: NetworkEntry, *, backend: str, runtime: str = "auto", precision: str = "fp32",
                 parity: str = "") -> ModelSpec:
    """The CPU `config.pbtxt` of a network on `backend` (BACKENDS); the python backend runs it
    with `runtime` (RUNTIMES, or "auto": `resolve_runtime`), Triton's own backends are their runtime.

    `precision` "bf16" (python backend only: OpenVINO's BF16 hint) or "int8" (the weights file is a
    quantized graph) comes with `parity`, its parity report's one-line summary; both go into the
    config's parameters, where `lesionseg status --models` reads them.
    """
    if backend not in BACKENDS:
        raise ExportError(f"unknown serving backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if precision != "fp32" and not parity:
        raise ExportError(f"{entry.name}: precision {precision} is written only with its parity report")
    if precision == "bf16" and backend != "python":
        raise ExportError(f"--precision bf16 is served by the python backend's OpenVINO runtime; Triton's {backend} backend "
                          "is not offered it (no parity report was run there)")
    runtime = resolve_runtime(entry.name, runtime, precision)
    if runtime not in RUNTIMES:
        raise ExportError(f"unknown network runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    parameters: dict[str, str] = {}
    filename = ""
    threads = str(entry.threads or CPU_INTRA_OP_THREADS)
    if backend == "python":
        # the python backend's entry point is model.py; the weights it loads must be there too
        parameters["weights"] = WEIGHTS
        parameters.update(intra_op_threads=threads, ort_spinning="0",
                          ort_mem_pattern=str(int(CPU_MEMORY_PATTERN)), run_batch=str(CPU_RUN_BATCH))
        if runtime != "onnxruntime":
            parameters["runtime"] = runtime
    elif backend == "onnxruntime":
        # Triton's onnxruntime backend (its README's parameter names); it runs the batch the batcher forms
        parameters.update(intra_op_thread_count=threads, enable_mem_pattern=str(int(CPU_MEMORY_PATTERN)))
    else:  # Triton's openvino backend reads the ONNX file itself (its README: model.onnx allowed)
        filename = WEIGHTS
        parameters.update(INFERENCE_NUM_THREADS=threads, NUM_STREAMS="1", PERFORMANCE_HINT="LATENCY")
    if precision != "fp32":
        parameters.update(precision=precision, parity=parity)
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
        default_model_filename=filename,
    )


def write_network_entry(entry: NetworkEntry, repository: Path, *, backend: str, gpu: GpuOptions | None = None,
                        runtime: str = "auto", precision: str = "fp32", parity: str = "") -> Path:
    """Write a network's `config.pbtxt` (and, for the python backend, its thin model.py) and, with
    `gpu`, its `configs/gpu.pbtxt`; no weights.

    What an earlier export left that no longer fits is removed: the GPU variant when `gpu` is None,
    and always a TensorRT engine with its `configs/tensorrt.pbtxt`, built from the weights being
    replaced (`lesionseg export tensorrt` builds it again).

    Returns:
        The path of `config.pbtxt`.
    """
    cpu_precision = precision if precision != "fp16" else "fp32"  # FP16 is the GPU variant's
    path = write_config(network_spec(entry, backend=backend, runtime=runtime, precision=cpu_precision,
                                     parity=parity if cpu_precision != "fp32" else ""), repository)
    stale = [config_path(repository, entry.name, TENSORRT_VARIANT), repository / entry.name / "1" / PLAN]
    if backend == "python":
        write_model_py(repository, entry.name, OnnxNetModel)
    else:
        stale.append(repository / entry.name / "1" / "model.py")
    if gpu is not None:
        write_config(gpu_network_spec(entry, gpu, parity=parity if precision == gpu.precision != "fp32" else ""),
                     repository, variant=GPU_VARIANT)
    else:
        stale.append(config_path(repository, entry.name, GPU_VARIANT))
    for old in stale:
        old.unlink(missing_ok=True)
    return path
