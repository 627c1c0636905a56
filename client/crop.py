"""`sct_crop_image -m MASK -dilate AxBxC`: crop an image to its mask's bounding box, widened.

The box is computed per array axis of the image as stored (no reorientation, no resampling),
widened by A, B, C voxels (or millimetres, converted with the voxel size and rounded up) on each
side, and clipped to the image. The cropped image keeps world positions: its affine is the input
affine shifted to the box origin. `crop_image` is `lesionseg crop`; `cord_dilation` is the
`--crop-to-cord` workflow's widening around the cord.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from lesionseg.core.errors import InputError, UsageError

#: SCT's recipe crops MP2RAGE images (~1 mm) with `-dilate 30x30x5` voxels: here 30 mm left-right,
#: 30 mm antero-posterior and 5 mm along the cord, so it means the same on any resolution.
CORD_DILATION_MM = {"LR": 30.0, "AP": 30.0, "SI": 5.0}


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


def cord_dilation(affine: np.ndarray, spacing: Sequence[float]) -> tuple[int, int, int]:
    """Voxels per array axis of an image (`affine`, `spacing` mm) for `CORD_DILATION_MM`: 30 mm
    (R-L), 30 mm (A-P), 5 mm (S-I), along the axes those directions map to in its array."""
    from lesionseg.core.orientation import axcodes

    out = []
    for code, size in zip(axcodes(affine), spacing):
        direction = "LR" if code in "LR" else ("AP" if code in "AP" else "SI")
        out.append(int(np.ceil(CORD_DILATION_MM[direction] / size - 1e-9)))
    return tuple(out)  # type: ignore[return-value]


def crop_image(image_path: Path, mask_path: Path, dilation: Sequence[float], *, unit: str = "vox",
               output: Path | None = None, overwrite: bool = False) -> Path:
    """`sct_crop_image -i IMG -m MASK -dilate AxBxC`: write the image cropped to the mask's box,
    its voxels as stored (dtype and scaling kept); default output `<in>_crop.nii.gz`. Returns it.

    Raises:
        InputError: unreadable files, a mask not on the image's grid, an empty mask.
        OutputExistsError: the output exists and not `overwrite`.
    """
    from lesionseg.core.nibabel_import import nibabel as nib

    from lesionseg.core.nifti import load_nifti, refuse_existing, save_nifti, stem

    image = load_nifti(image_path)
    mask = load_nifti(mask_path, what="mask", allow_empty=True)
    if mask.data.shape != image.data.shape or not np.allclose(mask.affine, image.affine, atol=1e-3):
        raise InputError(f"{mask_path}: mask is not on the grid of {image_path} (shape {mask.data.shape} vs {image.data.shape})")
    try:
        box = mask_box(mask.data, dilation_voxels(dilation, unit, image.spacing))
    except InputError as exc:
        raise InputError(f"{mask_path}: {exc}") from None
    output = output or image_path.parent / f"{stem(image_path)}_crop.nii.gz"
    refuse_existing([output], overwrite=overwrite)
    raw = np.asanyarray(nib.load(str(image_path)).dataobj).reshape(image.data.shape)
    return save_nifti(np.ascontiguousarray(raw[box.slices]), cropped_affine(image.affine, box), output, like=image.header)
