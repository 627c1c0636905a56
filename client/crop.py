"""`sct_crop_image -m MASK -dilate AxBxC`: crop an image to its mask's bounding box, widened.

The box is computed per array axis of the image as stored (no reorientation, no resampling),
widened by A, B, C voxels (or millimetres, converted with the voxel size and rounded up) on each
side, and clipped to the image. The cropped image keeps world positions: its affine is the input
affine shifted to the box origin.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

import numpy as np

from lesionseg.core.errors import InputError, UsageError


@dataclasses.dataclass(frozen=True)
class Box:
    """Half-open voxel ranges [start, stop) per array axis."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))  # type: ignore[return-value]


def parse_dilation(text: str) -> tuple[float, float, float]:
    """"30x30x5" -> (30, 30, 5); a single number applies to every axis."""
    parts = re.split(r"[xX,]", text.strip())
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or any(v < 0 or not math.isfinite(v) for v in values):
        raise UsageError(f"-dilate {text!r}: expected AxBxC with non-negative numbers (e.g. 30x30x5)")
    return tuple(values)  # type: ignore[return-value]


def dilation_voxels(dilation: Sequence[float], unit: str, spacing: Sequence[float]) -> tuple[int, int, int]:
    if unit == "vox":
        return tuple(int(round(d)) for d in dilation)  # type: ignore[return-value]
    if unit == "mm":
        return tuple(int(math.ceil(d / s - 1e-9)) for d, s in zip(dilation, spacing))  # type: ignore[return-value]
    raise UsageError(f"-dilate-unit {unit!r}: choose vox or mm")


def mask_box(mask: np.ndarray, dilation_vox: Sequence[int]) -> Box:
    """Bounding box of the nonzero voxels, widened by `dilation_vox` per side, clipped to the array."""
    present = np.argwhere(mask > 0)
    if present.size == 0:
        raise InputError("the mask is empty: nothing to crop around")
    lo = present.min(axis=0) - np.asarray(dilation_vox)
    hi = present.max(axis=0) + 1 + np.asarray(dilation_vox)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, mask.shape)
    return Box(start=tuple(int(v) for v in lo), stop=tuple(int(v) for v in hi))  # type: ignore[arg-type]


def cropped_affine(affine: np.ndarray, box: Box) -> np.ndarray:
    shift = np.eye(4)
    shift[:3, 3] = box.start
    return affine @ shift


def uncrop(data: np.ndarray, box: Box, shape: Sequence[int]) -> np.ndarray:
    """Paste `data` (the box's shape) into zeros of `shape`."""
    out = np.zeros(tuple(shape), data.dtype)
    out[box.slices] = data
    return out
