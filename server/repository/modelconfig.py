"""Triton model configurations built from keyword-only dataclasses through `model_config_pb2`.

Nothing here pastes strings: a `ModelSpec` becomes a `model_config_pb2.ModelConfig` message,
which protobuf's text format renders as `config.pbtxt`. `parse_config` is the inverse used by
`lesionseg repository check` and by the golden-file tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

CONFIG_NAME = "config.pbtxt"
#: Folder of a model's alternative configurations: `configs/<name>.pbtxt`, chosen by
#: `tritonserver --model-config-name=<name>`; a model without one falls back to `config.pbtxt`.
VARIANTS_DIR = "configs"

#: Triton data type names (without the TYPE_ prefix) for numpy dtypes.
_NUMPY_TO_TRITON = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.object_): "STRING",
}


def data_type(value: str | np.dtype | type) -> int:
    """The `model_config_pb2.DataType` enum value for "FP32", "TYPE_FP32" or a numpy dtype."""
    if isinstance(value, str) and not value.startswith(("float", "int", "uint", "bool")):
        name = value.upper()
    else:
        name = _NUMPY_TO_TRITON[np.dtype(value)]
    name = name if name.startswith("TYPE_") else "TYPE_" + name
    try:
        return mc.DataType.Value(name)
    except ValueError:
        raise ValueError(f"unknown Triton data type {value!r}") from None


def data_type_name(value: int) -> str:
    """"FP32" for `TYPE_FP32`."""
    return mc.DataType.Name(value).removeprefix("TYPE_")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TensorSpec:
    """One input or output tensor. `dims` excludes the batch dimension when max_batch_size > 0;
    -1 marks a variable size."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnsembleStep:
    """One step of an ensemble: `input_map` maps the step model's input names to ensemble tensor
    names, `output_map` the step model's output names to ensemble tensor names."""

    model: str
    input_map: Mapping[str, str]
    output_map: Mapping[str, str]
    version: int = -1


@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicBatching:
    """Triton's dynamic batcher: `max_queue_delay_us` microseconds of waiting to form a batch."""

    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Accelerator:
    """One GPU execution accelerator (`optimization.execution_accelerators.gpu_execution_accelerator`):
    for the onnxruntime backend, `name` "tensorrt" with the string `parameters` its
    `src/onnxruntime.cc` accepts (an unknown key fails the model's load)."""

    name: str
    parameters: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Warmup:
    """One `model_warmup` sample: `batch_size` items of zeros for every input, sent at load time
    (TensorRT builds its engine then, inside the startup probe, not on the first request)."""

    name: str
    batch_size: int
    inputs: Sequence[TensorSpec]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything lesionseg sets in a model's `config.pbtxt`.

    Exactly one of `backend` ("python", "onnxruntime", ...) or `platform` ("ensemble",
    "tensorrt_plan", ...) is usually given; ensembles list their `steps`.
    """

    name: str
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    backend: str = ""
    platform: str = ""
    max_batch_size: int = 0
    instance_count: int = 0
    instance_kind: str = "KIND_CPU"
    dynamic_batching: DynamicBatching | None = None
    parameters: Mapping[str, str] = dataclasses.field(default_factory=dict)
    steps: Sequence[EnsembleStep] = ()
    default_model_filename: str = ""
    gpu_accelerators: Sequence[Accelerator] = ()
    warmup: Sequence[Warmup] = ()

    def __post_init__(self) -> None:
        if bool(self.steps) != (self.platform == "ensemble"):
            raise ValueError(f"{self.name}: ensemble steps go with platform 'ensemble' and nothing else")
        if not self.backend and not self.platform:
            raise ValueError(f"{self.name}: a backend or a platform is required")


def _tensor(message: mc.ModelInput | mc.ModelOutput, spec: TensorSpec) -> None:
    message.name = spec.name
    message.data_type = data_type(spec.dtype)
    message.dims.extend(spec.dims)
    if spec.optional:
        if not isinstance(message, mc.ModelInput):
            raise ValueError(f"output {spec.name} cannot be optional")
        message.optional = True


def to_proto(spec: ModelSpec) -> mc.ModelConfig:
    """Build the `ModelConfig` message for `spec`."""
    config = mc.ModelConfig(name=spec.name, max_batch_size=spec.max_batch_size)
    if spec.backend:
        config.backend = spec.backend
    if spec.platform:
        config.platform = spec.platform
    if spec.default_model_filename:
        config.default_model_filename = spec.default_model_filename
    for tensor in spec.inputs:
        _tensor(config.input.add(), tensor)
    for tensor in spec.outputs:
        _tensor(config.output.add(), tensor)
    if spec.instance_count:
        config.instance_group.add(kind=mc.ModelInstanceGroup.Kind.Value(spec.instance_kind), count=spec.instance_count)
    if spec.dynamic_batching is not None:
        config.dynamic_batching.max_queue_delay_microseconds = spec.dynamic_batching.max_queue_delay_us
        config.dynamic_batching.preferred_batch_size.extend(spec.dynamic_batching.preferred_batch_sizes)
    for key in sorted(spec.parameters):
        config.parameters[key].string_value = str(spec.parameters[key])
    for accelerator in spec.gpu_accelerators:
        message = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name=accelerator.name)
        for key in sorted(accelerator.parameters):
            message.parameters[key] = str(accelerator.parameters[key])
    for sample in spec.warmup:
        message = config.model_warmup.add(name=sample.name, batch_size=sample.batch_size)
        for tensor in sample.inputs:
            message.inputs[tensor.name].data_type = data_type(tensor.dtype)
            message.inputs[tensor.name].dims.extend(tensor.dims)
            message.inputs[tensor.name].zero_data = True
    for step in spec.steps:
        message = config.ensemble_scheduling.step.add(model_name=step.model, model_version=step.version)
        for key, value in step.input_map.items():
            message.input_map[key] = value
        for key, value in step.output_map.items():
            message.output_map[key] = value
    return config


def to_text(config: mc.ModelConfig) -> str:
    """`config.pbtxt` text for a message (protobuf text format, stable field order)."""
    return text_format.MessageToString(config)


def parse_config(text: str, *, source: str = CONFIG_NAME) -> mc.ModelConfig:
    """Parse `config.pbtxt` text.

    Raises:
        ValueError: one line naming `source` and protobuf's reason (with line:column).
    """
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"{source}: {exc}") from None


def read_config(path: Path) -> mc.ModelConfig:
    """Parse the `config.pbtxt` at `path` (ValueError on unreadable or malformed text)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None
    return parse_config(text, source=str(path))


def config_path(repository: Path, model: str, variant: str | None = None) -> Path:
    """`<repository>/<model>/config.pbtxt`, or `<model>/configs/<variant>.pbtxt` for a variant."""
    folder = repository / model
    return folder / VARIANTS_DIR / f"{variant}.pbtxt" if variant else folder / CONFIG_NAME


def write_config(spec: ModelSpec | mc.ModelConfig, repository: Path, *, variant: str | None = None) -> Path:
    """Write `<repository>/<name>/config.pbtxt` (or `configs/<variant>.pbtxt`); returns its path."""
    config = to_proto(spec) if isinstance(spec, ModelSpec) else spec
    path = config_path(repository, config.name, variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_text(config))
    return path


def parameters(config: mc.ModelConfig) -> dict[str, str]:
    """A config's `parameters` as a plain dict of strings."""
    return {key: value.string_value for key, value in config.parameters.items()}
