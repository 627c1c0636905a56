"""GPU variants of the network entries, beside the CPU `config.pbtxt` in the same model folder.

- `configs/gpu.pbtxt`: Triton's own `onnxruntime` backend on `KIND_GPU`, dynamic batching with a
  maximum batch sized for 3D tiles, and the TensorRT execution accelerator (FP16 or FP32, explicit
  optimization profile over the batch axis, engine cache on a volume so a restart does not
  rebuild). A zero-data warmup at the maximum batch makes TensorRT build (or load) its engine while
  the model loads, inside the startup probe, and fails the load at once if the batch does not fit.
- `configs/tensorrt.pbtxt`: `platform: tensorrt_plan`, an engine `1/model.plan` built from the
  same `1/model.onnx` by `lesionseg export tensorrt` (`lesionseg.export.tensorrt`) on the GPU it
  will serve on.

`tritonserver --model-config-name=gpu` takes `configs/gpu.pbtxt` where a model has one and
`config.pbtxt` everywhere else, so one repository serves both ways: the networks move to the GPU
while the Python pre/post-processing and BLS pipeline models stay `KIND_CPU`.

The accelerator keys are those onnxruntime_backend's `src/onnxruntime.cc` parses
(`TENSORRT_ACCELERATOR_KEYS`); the backend refuses an unknown key, so the configs are generated
from this table and `lesionseg repository check` validates every key and value against it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import PurePosixPath

from tritonclient.grpc import model_config_pb2 as mc

from lesionseg.core.enums import Precision
from lesionseg.core.errors import UsageError
from lesionseg.server.repository.entry import NetworkEntry
from lesionseg.server.repository.modelconfig import Accelerator, DynamicBatching, ModelSpec, TensorSpec, Warmup

GPU_VARIANT = "gpu"
TENSORRT_VARIANT = "tensorrt"
#: --precision value -> the accelerator's `precision_mode` (TensorRT also knows BF16 and INT8:
#: not offered until a parity report backs them).
PRECISIONS = {Precision.FP32: "FP32", Precision.FP16: "FP16"}
PLAN = "model.plan"
#: Config parameters saying a network's precision and its parity report's summary.
PRECISION_PARAMETERS = ("precision", "parity")
DEFAULT_ENGINE_CACHE = "/engine-cache"
DEFAULT_WORKSPACE_BYTES = 4 << 30
#: Input voxels (channels included) of one GPU batch: the maximum batch is the largest power of
#: two of tiles within it, at least the CPU entry's batch (what the pipelines send per request)
#: and at most GPU_MAX_BATCH. A 1x64x128x128 nnU-Net tile gets 8, a 48^3 legacy block 64.
#: Chosen from the tile sizes, not measured on a GPU here (no GPU): see deploy/README.md.
GPU_BATCH_VOXELS = 1 << 23
GPU_MAX_BATCH = 64

#: Every key onnxruntime_backend's `src/onnxruntime.cc` accepts for the "tensorrt" accelerator,
#: with the kind of value it parses (read from the backend's source; an unknown key fails the load).
TENSORRT_ACCELERATOR_KEYS: dict[str, str] = {
    "precision_mode": "precision",
    "max_workspace_size_bytes": "uint",
    "trt_max_partition_iterations": "int",
    "trt_min_subgraph_size": "int",
    "int8_calibration_table_name": "str",
    "int8_use_native_calibration_table": "bool",
    "trt_dla_enable": "bool",
    "trt_dla_core": "int",
    "trt_engine_cache_enable": "bool",
    "trt_engine_cache_path": "path",
    "trt_engine_cache_prefix": "str",
    "trt_dump_subgraphs": "bool",
    "trt_force_sequential_engine_build": "bool",
    "trt_context_memory_sharing_enable": "bool",
    "trt_layer_norm_fp32_fallback": "bool",
    "trt_timing_cache_enable": "bool",
    "trt_timing_cache_path": "path",
    "trt_force_timing_cache": "bool",
    "trt_detailed_build_log": "bool",
    "trt_build_heuristics_enable": "bool",
    "trt_sparsity_enable": "bool",
    "trt_builder_optimization_level": "int",
    "trt_auxiliary_streams": "int",
    "trt_tactic_sources": "str",
    "trt_extra_plugin_lib_paths": "str",
    "trt_profile_min_shapes": "shapes",
    "trt_profile_opt_shapes": "shapes",
    "trt_profile_max_shapes": "shapes",
    "trt_cuda_graph_enable": "bool",
    "trt_dump_ep_context_model": "bool",
    "trt_ep_context_file_path": "str",
    "trt_ep_context_embed_mode": "int",
}
_PROFILE_KEYS = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
#: The backend's ParseBoolValue: true/false, yes/no, on/off or 1/0, any case.
_BOOLS = {"true", "false", "yes", "no", "on", "off", "1", "0"}
_SHAPE = re.compile(r"^[^:,]+:\d+(x\d+)*$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GpuOptions:
    """How the GPU variant runs a network.

    Attributes:
        precision: "fp32" or "fp16" (TensorRT `precision_mode`).
        engine_cache: absolute path, inside the serving container, of the engine cache volume;
            each network caches under `<engine_cache>/<network>`.
        workspace_bytes: TensorRT builder workspace limit.
    """

    precision: str = "fp32"
    engine_cache: str = DEFAULT_ENGINE_CACHE
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown GPU precision {self.precision!r} (choose from {', '.join(PRECISIONS)})")
        if not PurePosixPath(self.engine_cache).is_absolute():
            raise UsageError(f"the engine cache {self.engine_cache!r} must be an absolute path in the serving container")
        if self.workspace_bytes <= 0:
            raise UsageError(f"the TensorRT workspace must be positive, not {self.workspace_bytes}")


def gpu_max_batch(entry: NetworkEntry) -> int:
    """The GPU variant's `max_batch_size` for a network whose items have `entry.input_dims` (its
    largest profile shape when dims are free); 0 for a network without a batch axis.

    Raises:
        UsageError: free input dims without a profile range (`NetworkEntry.gpu_dims`).
    """
    if entry.max_batch_size == 0:
        return 0
    dims = _profile_dims(entry)
    voxels = math.prod(dims[1])
    fit = 1 << max(0, int(math.floor(math.log2(max(1, GPU_BATCH_VOXELS // voxels)))))
    return max(entry.max_batch_size, min(GPU_MAX_BATCH, fit))


def _profile_dims(entry: NetworkEntry) -> tuple[tuple[int, ...], tuple[int, ...]]:
    dims = entry.profile_dims
    if dims is None:
        raise UsageError(f"{entry.name}: input dims {list(entry.input_dims)} are free and no GPU profile range is given")
    return dims


def profile_shape(input_name: str, dims: tuple[int, ...], batch: int | None) -> str:
    """ONNX Runtime's profile-shape text for one input: "input_1:8x1x48x48x48" (batch None: a
    network without a batch axis, its dims as they are)."""
    return f"{input_name}:" + "x".join(str(d) for d in ((batch, *dims) if batch is not None else dims))


def tensorrt_parameters(entry: NetworkEntry, options: GpuOptions) -> dict[str, str]:
    """The TensorRT accelerator's parameters for `entry` (all keys in TENSORRT_ACCELERATOR_KEYS)."""
    batch = gpu_max_batch(entry)
    smallest, largest = _profile_dims(entry)
    first, tuned = (1, min(batch, entry.max_batch_size)) if batch else (None, None)
    return {
        "precision_mode": PRECISIONS[options.precision],
        "max_workspace_size_bytes": str(options.workspace_bytes),
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": str(PurePosixPath(options.engine_cache) / entry.name),
        # every input's min/opt/max must be given (ONNX Runtime's rule for explicit profiles): one
        # profile over the batch axis, the spatial size fixed (or over the entry's range of free
        # dims, tuned for its largest), so the engine is built once; tuned for the batch one
        # pipeline request carries (the CPU entry's), up to the merged maximum
        "trt_profile_min_shapes": profile_shape(entry.input_name, smallest, first),
        "trt_profile_opt_shapes": profile_shape(entry.input_name, largest, tuned),
        "trt_profile_max_shapes": profile_shape(entry.input_name, largest, batch or None),
    }


def gpu_network_spec(entry: NetworkEntry, options: GpuOptions, *, parity: str = "") -> ModelSpec:
    """`configs/gpu.pbtxt` of a network: onnxruntime backend, KIND_GPU, TensorRT accelerator.

    FP16 comes with `parity`, its parity report's one-line summary (`lesionseg.export.precision`),
    kept with the precision in the config's parameters for `lesionseg status --models`.

    Raises:
        UsageError: FP16 without a parity report.
    """
    if options.precision != "fp32" and not parity:
        raise UsageError(f"{entry.name}: GPU precision {options.precision} is written only with its parity report "
                         "(--parity-data DIR)")
    batch = gpu_max_batch(entry)
    inputs = [TensorSpec(name=entry.input_name, dtype="FP32", dims=entry.input_dims)]
    return ModelSpec(
        name=entry.name,
        backend="onnxruntime",
        max_batch_size=batch,
        inputs=inputs,
        outputs=[TensorSpec(name=n, dtype="FP32", dims=entry.output_dims) for n in entry.output_names],
        instance_count=1,  # per GPU of the pod
        instance_kind="KIND_GPU",
        dynamic_batching=DynamicBatching(max_queue_delay_us=entry.queue_delay_us) if batch else None,
        gpu_accelerators=[Accelerator(name="tensorrt", parameters=tensorrt_parameters(entry, options))],
        # the largest shape: TensorRT builds the engine at load, and a free dim needs a size
        warmup=[Warmup(name=f"zeros_batch{max(batch, 1)}", batch_size=max(batch, 1),
                       inputs=[TensorSpec(name=entry.input_name, dtype="FP32", dims=_profile_dims(entry)[1])])],
        parameters={"precision": options.precision, "parity": parity} if parity else {},
    )


def tensorrt_plan_config(gpu_config: mc.ModelConfig) -> mc.ModelConfig:
    """`configs/tensorrt.pbtxt` from a network's `configs/gpu.pbtxt`: the same tensors, batch and
    instances, served from the prebuilt engine `1/model.plan` (no accelerator: it is TensorRT)."""
    config = mc.ModelConfig()
    config.CopyFrom(gpu_config)
    config.ClearField("backend")
    config.ClearField("optimization")
    kept = {key: config.parameters[key].string_value for key in PRECISION_PARAMETERS if key in config.parameters}
    config.ClearField("parameters")
    for key, value in kept.items():
        config.parameters[key].string_value = value
    config.platform = "tensorrt_plan"
    config.default_model_filename = PLAN
    return config


def tensorrt_accelerator(config: mc.ModelConfig) -> dict[str, str] | None:
    """The parameters of a config's "tensorrt" GPU accelerator, or None without one."""
    for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
        if accelerator.name == "tensorrt":
            return dict(accelerator.parameters)
    return None


def _shape_problems(key: str, value: str, config: mc.ModelConfig) -> list[str]:
    inputs = {t.name: tuple(t.dims) for t in config.input}
    problems = []
    for item in value.split(","):
        if not _SHAPE.match(item):
            problems.append(f"TensorRT {key} {item!r} is not name:NxDxHxW")
            continue
        name, text = item.rsplit(":", 1)
        dims = tuple(int(d) for d in text.split("x"))
        if name not in inputs:
            problems.append(f"TensorRT {key} names {name!r}, which is not an input")
            continue
        item_dims, batch_ok = (dims[1:], 1 <= dims[0] <= config.max_batch_size) if config.max_batch_size else (dims, True)
        fits = len(item_dims) == len(inputs[name]) and all(d > 0 and c in (-1, d) for c, d in zip(inputs[name], item_dims))
        if not fits or not batch_ok:
            batch = f"batch 1..{config.max_batch_size} x " if config.max_batch_size else ""
            problems.append(f"TensorRT {key} {item!r} does not fit input {name} ({batch}{'x'.join(map(str, inputs[name]))}; "
                            "-1: any size)")
    return problems


def accelerator_problems(config: mc.ModelConfig) -> list[str]:
    """What onnxruntime_backend would refuse (or silently misuse) in a config's GPU accelerators."""
    problems: list[str] = []
    for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
        if accelerator.name not in ("tensorrt", "cuda"):
            problems.append(f"unknown GPU execution accelerator {accelerator.name!r}")
        if accelerator.name != "tensorrt":
            continue
        if (config.platform or config.backend) not in ("onnxruntime", "onnxruntime_onnx"):
            problems.append(f"the TensorRT accelerator is an onnxruntime-backend option, not {config.platform or config.backend!r}")
        params = dict(accelerator.parameters)
        for key, value in sorted(params.items()):
            kind = TENSORRT_ACCELERATOR_KEYS.get(key)
            if kind is None:
                problems.append(f"unknown TensorRT accelerator parameter {key!r} (the backend refuses to load it)")
            elif kind == "precision" and value not in ("FP32", "FP16", "BF16", "INT8"):
                problems.append(f"TensorRT precision_mode {value!r} is not FP32, FP16, BF16 or INT8")
            elif kind == "bool" and value.lower() not in _BOOLS:
                problems.append(f"TensorRT {key} {value!r} is not a boolean")
            elif kind in ("int", "uint") and not re.fullmatch(r"-?\d+" if kind == "int" else r"\d+", value):
                problems.append(f"TensorRT {key} {value!r} is not {'an' if kind == 'int' else 'a non-negative'} integer")
            elif kind == "path" and not PurePosixPath(value).is_absolute():
                problems.append(f"TensorRT {key} {value!r} is not an absolute path")
            elif kind == "shapes":
                problems.extend(_shape_problems(key, value, config))
        given = [k for k in _PROFILE_KEYS if k in params]
        if given and len(given) != len(_PROFILE_KEYS):
            problems.append("TensorRT profile shapes need all of min, opt and max (ONNX Runtime's rule); "
                            f"only {', '.join(given)} given")
    if any(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in config.instance_group) and config.backend == "python":
        problems.append("a Python-backend model on KIND_GPU: lesionseg's Python models run on the CPU")
    return problems
