"""Floating-point operations of an ONNX network, counted from its graph.

Counts the multiply-accumulates of the layers that dominate a segmentation network (Conv,
ConvTranspose, MatMul, Gemm) as 2 FLOPs each, at one given input shape; everything else
(normalisation, activations, pooling, resampling) is left out and is a few percent of a U-Net's
work. Shapes come from ONNX shape inference with the input's dynamic axes fixed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LayerFlops:
    """One counted node: its name, operator and FLOPs at the given input shape."""

    name: str
    op: str
    flops: int


def _static_model(model: Any, shape: Sequence[int]) -> Any:
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    graph_input = next(i for i in fixed.graph.input if i.name not in {t.name for t in fixed.graph.initializer})
    dims = graph_input.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ValueError(f"input {graph_input.name} has {len(dims)} axes, the shape given {len(shape)}")
    for dim, size in zip(dims, shape):
        dim.Clear()
        dim.dim_value = int(size)
    return onnx.shape_inference.infer_shapes(fixed, strict_mode=True)


def _shapes(model: Any) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    for tensor in model.graph.initializer:
        shapes[tensor.name] = tuple(tensor.dims)
    return shapes


def _attribute(node: Any, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


def layer_flops(model: Any, shape: Sequence[int]) -> list[LayerFlops]:
    """FLOPs of every counted node of `model` (an onnx.ModelProto) with its input of `shape`.

    Raises:
        ValueError: a counted node's shapes cannot be inferred.
    """
    inferred = _static_model(model, shape)
    shapes = _shapes(inferred)
    layers = []
    for node in inferred.graph.node:
        if node.op_type not in COUNTED:
            continue
        try:
            if node.op_type in ("Conv", "ConvTranspose"):
                # the weight's second axis is already per group: Conv (Cout, Cin/group, k...), one
                # MAC per output value, input channel of its group and kernel tap; ConvTranspose
                # (Cin, Cout/group, k...), each input value scattered into Cout/group x kernel
                w = shapes[node.input[1]]
                counted = shapes[node.output[0]] if node.op_type == "Conv" else shapes[node.input[0]]
                macs = math.prod(counted) * w[1] * math.prod(w[2:])
            elif node.op_type == "MatMul":
                macs = math.prod(shapes[node.output[0]]) * shapes[node.input[0]][-1]
            else:  # Gemm: (M, K) x (K, N)
                a = shapes[node.input[0]]
                k = a[0] if _attribute(node, "transA", 0) else a[1]
                macs = math.prod(shapes[node.output[0]]) * k
        except KeyError as exc:
            raise ValueError(f"{node.op_type} node {node.name or node.output[0]}: shape of {exc} unknown") from None
        layers.append(LayerFlops(name=node.name or node.output[0], op=node.op_type, flops=2 * macs))
    return layers


def network_flops(model: Any, shape: Sequence[int]) -> int:
    """Total counted FLOPs of one inference of `model` on an input of `shape`."""
    return sum(layer.flops for layer in layer_flops(model, shape))
