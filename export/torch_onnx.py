"""PyTorch checkpoints into ONNX, for the families trained with PyTorch (nnU-Net, MONAI).

Networks are exported with static spatial dims (the tile or window they are always run on) and a
dynamic batch dim, so Triton's dynamic batcher can merge tiles of different requests and
TensorRT needs one profile; each export is checked against PyTorch on random inputs.

Needs the `export` extra (torch, dynamic-network-architectures).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lesionseg.core.errors import ExportError, InputError

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-3  # relative to the largest output magnitude
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def torch_module():
    """`torch`, or an ExportError naming the extra to install."""
    try:
        import torch
    except ImportError:
        raise ExportError("exporting PyTorch models needs torch: pip install 'lesionseg-triton[export]' torch==2.13.0") from None
    return torch


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A PyTorch checkpoint on the CPU (safe unpickling first, full unpickling with a warning).

    Raises:
        InputError: the file is not a readable checkpoint.
    """
    torch = torch_module()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - nnU-Net checkpoints may hold objects outside the safe list
        logger.warning("%s needs full unpickling; only export checkpoints you trust", path)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path}: not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})") from None


def to_onnx(module: Any, patch: Sequence[int], channels: int) -> tuple[Any, float]:
    """Export `module` for (N, channels, *patch) inputs named `INPUT_NAME` -> `OUTPUT_NAME`.

    Returns:
        (onnx.ModelProto, max abs difference vs PyTorch on 3 random inputs).
    Raises:
        ExportError: the difference exceeds `PARITY_TOLERANCE` of the largest output.
    """
    import onnx
    import onnxruntime as ort

    torch = torch_module()
    example = torch.randn(2, channels, *patch)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}}, opset_version=17, dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    probe = torch.randn(3, channels, *patch, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = module(probe).numpy()
    got = session.run(None, {INPUT_NAME: probe.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    if diff > PARITY_TOLERANCE * max(1.0, float(np.abs(expected).max())):
        raise ExportError(f"ONNX differs from PyTorch by {diff:.3g} on random tiles")
    return model, diff
