"""PyTorch checkpoints into ONNX, for the families trained with PyTorch (nnU-Net, MONAI).

Networks are exported with static spatial dims (the tile or window they are always run on) and a
dynamic batch dim, so Triton's dynamic batcher can merge tiles of different requests and
TensorRT needs one profile; each export is checked against PyTorch on random inputs.

Needs the `export` extra (torch, dynamic-network-architectures).
"""

from __future__ import annotations

import io
import re
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


def _safe_globals() -> list[Any]:
    """What nnU-Net's checkpoints hold beyond tensors and builtins, allowed to `weights_only`
    unpickling: numpy scalars and their dtypes (its logging and _best_ema). Reconstructing these
    runs no code of the file's choosing."""
    import numpy as np

    allowed: list[Any] = [np.dtype, np.core.multiarray.scalar]  # type: ignore[attr-defined]
    allowed += [type(np.dtype(kind)) for kind in ("float64", "float32", "float16", "int64", "int32", "bool")]
    return allowed


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A PyTorch checkpoint on the CPU, unpickled with `weights_only=True` only (tensors,
    builtins, torch's own types and `_safe_globals`): a file that needs more (arbitrary code on
    load) is refused, never loaded in full.

    Raises:
        InputError: the file is not a readable checkpoint, or needs full unpickling.
    """
    torch = torch_module()
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "WeightsUnpickler" in str(exc):
            found = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", str(exc))
            raise InputError(f"{path}: refused: it needs full unpickling, which can run code"
                             f"{f' (it holds {found.group(1)})' if found else ''}; lesionseg loads checkpoints with "
                             "weights_only=True only: save the network's weights as a state dict") from None
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None


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
