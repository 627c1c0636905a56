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
from typing import Mapping, Sequence

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


#: SCT 7's crop-box faces (`sct_deepseg -box-xmin ... -box-zmax`, sc-crop's box): inclusive voxel
#: indices along the array axes 0, 1, 2 of the image as stored.
FACES = ("xmin", "xmax", "ymin", "ymax", "zmin", "zmax")


def faces_of(box: Box) -> dict[str, int]:
    """The box as SCT 7's inclusive faces {"xmin": ..., "zmax": ...}."""
    out = {}
    for axis, name in enumerate("xyz"):
        out[f"{name}min"], out[f"{name}max"] = box.start[axis], box.stop[axis] - 1
    return out


def box_of_faces(faces: Mapping[str, int], shape: Sequence[int]) -> Box:
    """The box of six inclusive faces on an image of `shape` (x, y, z voxels).

    Raises:
        UsageError: a face missing or outside the image, or a minimum above its maximum; the
            message names the -box-* option.
    """
    missing = [f for f in FACES if faces.get(f) is None]
    if missing:
        raise UsageError(f"crop box without {', '.join('-box-' + f for f in missing)}")
    for axis, name in enumerate("xyz"):
        for face in (f"{name}min", f"{name}max"):
            if not 0 <= int(faces[face]) < shape[axis]:
                raise UsageError(f"-box-{face} {faces[face]}: outside the image (0 to {shape[axis] - 1} along {name})")
        if faces[f"{name}min"] > faces[f"{name}max"]:
            raise UsageError(f"-box-{name}min {faces[f'{name}min']} is above -box-{name}max {faces[f'{name}max']}: "
                             "the box is inverted")
    return Box(start=tuple(int(faces[f"{n}min"]) for n in "xyz"),  # type: ignore[arg-type]
               stop=tuple(int(faces[f"{n}max"]) + 1 for n in "xyz"))


def with_faces(box: Box | None, overrides: Mapping[str, int | None], shape: Sequence[int]) -> Box:
    """`box` (None: the whole image) with the faces given in `overrides` (None: keep), checked as
    `box_of_faces` checks them: SCT 7's -box-* options over a detected box."""
    unknown = sorted(set(overrides) - set(FACES))
    if unknown:
        raise UsageError(f"unknown crop-box face(s) {', '.join(unknown)}: the faces are {', '.join(FACES)}")
    faces = faces_of(box if box is not None else Box(start=(0, 0, 0), stop=tuple(shape[:3])))  # type: ignore[arg-type]
    faces.update({face: int(value) for face, value in overrides.items() if value is not None})
    return box_of_faces(faces, shape)


def box_mask(shape: Sequence[int], box: Box) -> np.ndarray:
    """The `_cropbox` volume: uint8 of `shape`, 1 inside the box."""
    out = np.zeros(tuple(shape[:3]), np.uint8)
    out[box.slices] = 1
    return out


def touching_faces(mask: np.ndarray, box: Box) -> list[str]:
    """The box faces inside the image that the (full-size, x, y, z) `mask` reaches: the structure
    probably goes on beyond them. In SCT 7's order: per axis, the maximum face, then the minimum."""
    faces = faces_of(box)
    touched = []
    for axis, name in enumerate("xyz"):
        for face, border in ((f"{name}max", mask.shape[axis] - 1), (f"{name}min", 0)):
            index = faces[face]
            if index != border and np.take(mask, index, axis=axis).any():
                touched.append(face)
    return touched


def truncation_warning(faces: Sequence[str], cropbox: Path | str) -> str:
    """SCT 7's two-line warning when the segmentation reaches the crop box (`cropbox`: the
    `_cropbox` file written)."""
    return (f"the segmentation reaches the crop box at: {', '.join(faces)}. The spinal cord is likely truncated by the crop.\n"
            f"Open {Path(cropbox).name} in FSLeyes, read off the voxel index of the truncated face(s), and re-run with: "
            f"{'  '.join(f'-box-{face} <value>' for face in faces)}")


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
