"""Convert SCT's Keras 2 `.h5` networks to ONNX without TensorFlow.

The architecture comes from the file's `model_config` JSON, the weights from `model_weights/`.
Supported layers (what SCT's deepseg_lesion and deepseg_sc `_ctr` models use): InputLayer,
Conv2D, Conv3D, Conv2DTranspose, BatchNormalization, Activation (relu, sigmoid, linear, tanh,
softmax), Dropout (identity at inference), MaxPooling2D/3D, UpSampling2D/3D, Concatenate, and the
`_ctr` models' `Lambda` `z / temperature`. Any other layer is refused with a clear message.

Internally the ONNX graph is channels-first (ONNX's NC[D]HW); a channels_last Keras model gets one
Transpose after its input and one before its output, so the ONNX model keeps Keras' tensor
layout: `input_1` and `predictions` have the same shapes as in Keras, with a dynamic batch dim.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from lesionseg.core.errors import ExportError, InputError
from lesionseg.export.keras_lambda import lambda_divisor
from lesionseg.server.repository.legacy import INPUT_NAME, OUTPUT_NAME

logger = logging.getLogger(__name__)

OPSET = 17
IR_VERSION = 8  # widely loadable (onnxruntime, TensorRT)
LOGITS_NAME = "logits"

_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
_IDENTITY_LAYERS = {"Dropout", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout"}


def _onnx():
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is part of the export and test extras
        raise ExportError("exporting needs the 'onnx' package: pip install 'lesionseg-triton[export]'") from None
    return onnx


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover
        raise ExportError("reading Keras .h5 files needs h5py: pip install 'lesionseg-triton[export]'") from None
    return h5py


class _Graph:
    """Accumulates ONNX nodes and initializers; tensor names are Keras layer names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def const(self, name: str, array: np.ndarray) -> str:
        onnx = _onnx()
        self.initializers.append(onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        onnx = _onnx()
        self._count += 1
        self.nodes.append(onnx.helper.make_node(op, inputs, [output], name=f"{op}_{self._count}", **attrs))
        return output


class KerasModelFile:
    """A Keras 2 `.h5` model file: its layer configs and weights.

    Raises:
        InputError: the file is missing, not HDF5, or holds no Keras model config.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        h5py = _h5py()
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputError(f"{self.path}: not a readable HDF5 file ({exc})") from None
        raw = self._file.attrs.get("model_config")
        if raw is None or "model_weights" not in self._file:
            raise InputError(f"{self.path}: not a Keras model file (no model_config / model_weights)")
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        if config.get("class_name") not in ("Model", "Functional"):
            raise ExportError(f"{self.path}: only functional Keras models are supported (got {config.get('class_name')})")
        self.config = config["config"]
        self.layers: list[dict[str, Any]] = self.config["layers"]

    def weights(self, layer: str) -> dict[str, np.ndarray]:
        """A layer's weights keyed by their short name (kernel, bias, gamma, ...)."""
        group = self._file["model_weights"].get(layer)
        if group is None:
            return {}
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
        out = {}
        for name in names:
            short = name.split("/")[-1].split(":")[0]
            out[short] = np.asarray(group[name], dtype=np.float32)
        return out

    def close(self) -> None:
        self._file.close()


def _inbound(layer: dict[str, Any]) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ExportError(f"layer {layer['name']!r} is called more than once; shared layers are not supported")
    return [entry[0] for entry in nodes[0]] if nodes else []


def _data_format(layers: list[dict[str, Any]]) -> str:
    formats = {l["config"]["data_format"] for l in layers if "data_format" in l["config"]}
    if len(formats) > 1:
        raise ExportError(f"mixed data formats {sorted(formats)} are not supported")
    return formats.pop() if formats else "channels_last"


def _same_pads(kernel: list[int], dilation: list[int]) -> list[int]:
    """TF 'same' padding for stride 1: total d*(k-1), the extra voxel at the end."""
    before, after = [], []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        before.append(total // 2)
        after.append(total - total // 2)
    return before + after


class _Converter:
    def __init__(self, model: KerasModelFile) -> None:
        self.model = model
        self.graph = _Graph()
        self.layout = _data_format(model.layers)
        self.logits: str | None = None
        self.rank = 0  # rank of the Keras input, batch included

    def fail(self, layer: dict[str, Any], why: str) -> ExportError:
        return ExportError(f"{self.model.path}: layer {layer['name']!r} ({layer['class_name']}): {why}")

    def channel_axis(self, axis: int) -> int:
        """Map a Keras axis to the internal channels-first layout."""
        axis = axis % self.rank
        if self.layout == "channels_first":
            return axis
        return 1 if axis == self.rank - 1 else (axis + 1 if axis >= 1 else 0)

    def activation(self, name: str, source: str, output: str, layer: dict[str, Any]) -> str:
        if name == "linear":
            return self.graph.node("Identity", [source], output)
        if name == "softmax":
            return self.graph.node("Softmax", [source], output, axis=1)
        if name not in _ACTIVATIONS:
            raise self.fail(layer, f"activation {name!r} is not supported")
        if name == "sigmoid":
            self.logits = source
        return self.graph.node(_ACTIVATIONS[name], [source], output)

    def convert(self, layer: dict[str, Any], inputs: list[str]) -> str:  # noqa: C901, PLR0912 - one branch per layer type
        kind, cfg, name = layer["class_name"], layer["config"], layer["name"]
        g = self.graph
        if kind in _IDENTITY_LAYERS:
            return g.node("Identity", inputs, name)
        if kind == "Activation":
            return self.activation(cfg["activation"], inputs[0], name, layer)
        if kind in ("Conv2D", "Conv3D", "Conv2DTranspose"):
            w = self.model.weights(name)
            if "kernel" not in w:
                raise self.fail(layer, "kernel weights are missing")
            spatial = len(cfg["kernel_size"])
            strides = list(cfg.get("strides", [1] * spatial))
            dilation = list(cfg.get("dilation_rate", [1] * spatial))
            kernel = list(cfg["kernel_size"])
            if kind == "Conv2DTranspose":
                # Keras (kh, kw, out, in) -> ONNX (in, out, kh, kw)
                weight = w["kernel"].transpose(3, 2, 0, 1)
                if cfg["padding"] != "valid" and kernel != strides:
                    raise self.fail(layer, "transposed convolution with 'same' padding is supported only when kernel == strides")
                op, attrs = "ConvTranspose", {"kernel_shape": kernel, "strides": strides, "dilations": dilation}
            else:
                # Keras (*k, in, out) -> ONNX (out, in, *k)
                weight = w["kernel"].transpose(spatial + 1, spatial, *range(spatial))
                if cfg["padding"] == "same":
                    if any(s != 1 for s in strides):
                        raise self.fail(layer, "'same' padding with strides > 1 is not supported")
                    pads = _same_pads(kernel, dilation)
                elif cfg["padding"] == "valid":
                    pads = [0] * (2 * spatial)
                else:
                    raise self.fail(layer, f"padding {cfg['padding']!r} is not supported")
                op, attrs = "Conv", {"kernel_shape": kernel, "strides": strides, "dilations": dilation, "pads": pads}
            args = [inputs[0], g.const(f"{name}/kernel", weight.astype(np.float32))]
            if cfg.get("use_bias", True):
                args.append(g.const(f"{name}/bias", w["bias"]))
            activation = cfg.get("activation", "linear")
            out = g.node(op, args, name if activation == "linear" else f"{name}/linear", **attrs)
            return out if activation == "linear" else self.activation(activation, out, name, layer)
        if kind == "BatchNormalization":
            if self.channel_axis(cfg.get("axis", -1)) != 1:
                raise self.fail(layer, "only normalisation over the channel axis is supported")
            w = self.model.weights(name)
            channels = w["moving_mean"].shape[0]
            gamma = w.get("gamma", np.ones(channels, np.float32)) if cfg.get("scale", True) else np.ones(channels, np.float32)
            beta = w.get("beta", np.zeros(channels, np.float32)) if cfg.get("center", True) else np.zeros(channels, np.float32)
            args = [inputs[0], g.const(f"{name}/gamma", gamma), g.const(f"{name}/beta", beta),
                    g.const(f"{name}/moving_mean", w["moving_mean"]), g.const(f"{name}/moving_variance", w["moving_variance"])]
            return g.node("BatchNormalization", args, name, epsilon=float(cfg.get("epsilon", 1e-3)))
        if kind in ("MaxPooling2D", "MaxPooling3D", "AveragePooling2D", "AveragePooling3D"):
            if cfg.get("padding", "valid") != "valid":
                raise self.fail(layer, "only 'valid' pooling is supported")
            pool = list(cfg["pool_size"])
            strides = list(cfg.get("strides") or pool)
            op = "MaxPool" if kind.startswith("Max") else "AveragePool"
            return g.node(op, inputs, name, kernel_shape=pool, strides=strides)
        if kind in ("UpSampling2D", "UpSampling3D"):
            if cfg.get("interpolation", "nearest") != "nearest":
                raise self.fail(layer, "only nearest-neighbour upsampling is supported")
            size = cfg["size"]
            size = [size] * (2 if kind.endswith("2D") else 3) if isinstance(size, int) else list(size)
            scales = g.const(f"{name}/scales", np.array([1.0, 1.0, *size], np.float32))
            return g.node("Resize", [inputs[0], "", scales], name, mode="nearest",
                          coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        if kind == "Concatenate":
            return g.node("Concat", inputs, name, axis=self.channel_axis(cfg.get("axis", -1)))
        if kind == "Lambda":
            divisor = lambda_divisor(name, cfg, source=str(self.model.path))
            return g.node("Div", [inputs[0], g.const(f"{name}/temperature", np.array(divisor, np.float32))], name)
        raise self.fail(layer, "this layer type is not supported")

    def run(self, *, with_logits: bool) -> Any:
        onnx = _onnx()
        layers = self.model.layers
        input_layers = [l for l in layers if l["class_name"] == "InputLayer"]
        if len(input_layers) != 1 or len(self.model.config["output_layers"]) != 1:
            raise ExportError(f"{self.model.path}: only single-input, single-output models are supported")
        shape = input_layers[0]["config"]["batch_input_shape"]
        self.rank = len(shape)
        perm_in = [0, self.rank - 1, *range(1, self.rank - 1)]
        perm_out = [0, *range(2, self.rank), 1]
        tensors: dict[str, str] = {}
        for layer in layers:
            if layer["class_name"] == "InputLayer":
                name = layer["name"]
                tensors[name] = (self.graph.node("Transpose", [INPUT_NAME], f"{name}/nchw", perm=perm_in)
                                 if self.layout == "channels_last" else INPUT_NAME)
                continue
            inputs = [tensors[n] for n in _inbound(layer)]
            tensors[layer["name"]] = self.convert(layer, inputs)
        final = tensors[self.model.config["output_layers"][0][0]]
        to_keras = (lambda t, out: self.graph.node("Transpose", [t], out, perm=perm_out)) if self.layout == "channels_last" \
            else (lambda t, out: self.graph.node("Identity", [t], out))
        to_keras(final, OUTPUT_NAME)
        dims = ["N", *shape[1:]]
        outputs = [onnx.helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, None)]
        if with_logits:
            if self.logits is None:
                raise ExportError(f"{self.model.path}: the model has no sigmoid output whose logits could be exposed")
            to_keras(self.logits, LOGITS_NAME)
            outputs.append(onnx.helper.make_tensor_value_info(LOGITS_NAME, onnx.TensorProto.FLOAT, None))
        graph = onnx.helper.make_graph(
            self.graph.nodes, Path(self.model.path).stem,
            [onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, dims)],
            outputs, initializer=self.graph.initializers,
        )
        model = onnx.helper.make_model(graph, producer_name="lesionseg", opset_imports=[onnx.helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        model = onnx.shape_inference.infer_shapes(model)
        # declare the output shapes (same as the input's in these segmentation networks)
        for output in model.graph.output:
            inferred = next((v for v in model.graph.value_info if v.name == output.name), None)
            if inferred is not None:
                output.type.CopyFrom(inferred.type)
        onnx.checker.check_model(model)
        return model


def convert_keras_h5(path: Path, *, with_logits: bool = False) -> Any:
    """Convert a Keras 2 `.h5` model file to an `onnx.ModelProto`.

    Args:
        path: the `.h5` file.
        with_logits: also output `logits`, the input of the final sigmoid (for parity checks).

    Returns:
        An ONNX model with input `input_1` and output `predictions` in the Keras layout
        (e.g. (N, 1, 48, 48, 48) channels-first lesion nets, (N, 80, 80, 1) channels-last `_ctr` nets).
    """
    model = KerasModelFile(Path(path))
    try:
        return _Converter(model).run(with_logits=with_logits)
    finally:
        model.close()
