"""Lesion statistics of a mask: connected lesions, their size, extent and position; TSV/JSON sidecars.

Conventions, for every function here:
- a mask is an (x, y, z) array in some file's own axis order; a voxel with a value > 0 is lesion
  (binary and label masks alike: labels are merged, then lesions are recomputed; threshold a soft
  map before calling);
- lesions are the connected components of that set under 26-connectivity (voxels touching by a
  face, an edge or a corner belong to the same lesion), numbered 1..n in the order of their first
  voxel in C (row-major) order of the array;
- `spacing` is the voxel size in mm along the array axes (x, y, z); volumes are mm3, extents mm,
  centroids voxel coordinates (indices, fractional) on the mask's own grid.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from lesionseg.core.image import Image
from lesionseg.core.nifti import stem
from lesionseg.core.files import atomic_write_text
from lesionseg.core.lesions import CONNECTIVITY, components, voxel_volume_mm3

TSV_COLUMNS = (
    "lesion", "voxels", "volume_mm3", "extent_x_mm", "extent_y_mm", "extent_z_mm",
    "centroid_x_vox", "centroid_y_vox", "centroid_z_vox",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lesion:
    """One connected lesion.

    `extent_mm` is the size of its bounding box along (x, y, z): (last - first + 1) voxels times the
    spacing, i.e. outer voxel edges, not voxel centres. `centroid_vox` is the mean (x, y, z) voxel
    index of its voxels.
    """

    label: int
    voxels: int
    volume_mm3: float
    extent_mm: tuple[float, float, float]
    centroid_vox: tuple[float, float, float]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LesionStats:
    """Every lesion of one mask, and totals; `axis_codes` optionally names the anatomical direction
    of each array axis (nibabel "towards" codes, e.g. ("P", "S", "R"))."""

    spacing_mm: tuple[float, float, float]
    lesions: tuple[Lesion, ...]
    axis_codes: tuple[str, str, str] | None = None

    @property
    def count(self) -> int:
        return len(self.lesions)

    @property
    def total_voxels(self) -> int:
        return sum(lesion.voxels for lesion in self.lesions)

    @property
    def total_volume_mm3(self) -> float:
        return self.total_voxels * voxel_volume_mm3(self.spacing_mm)

    def to_dict(self) -> dict:
        """JSON-ready: count, total_volume_mm3, total_voxels, connectivity, spacing_mm, axis_codes,
        per_lesion (one dict per lesion, fields of `Lesion`)."""
        return {
            "count": self.count,
            "total_volume_mm3": self.total_volume_mm3,
            "total_voxels": self.total_voxels,
            "connectivity": CONNECTIVITY,
            "spacing_mm": list(self.spacing_mm),
            "axis_codes": list(self.axis_codes) if self.axis_codes else None,
            "per_lesion": [
                {**dataclasses.asdict(lesion), "extent_mm": list(lesion.extent_mm),
                 "centroid_vox": list(lesion.centroid_vox)}
                for lesion in self.lesions
            ],
        }


def lesion_stats(
    mask: np.ndarray, spacing: Sequence[float], *, axis_codes: tuple[str, str, str] | None = None,
) -> LesionStats:
    """Per-lesion voxel count, volume (mm3), bounding-box extent (mm) and centroid (voxels).

    Args:
        mask: (x, y, z) binary or label mask; values > 0 are lesion.
        spacing: voxel size in mm along x, y, z (all > 0).
        axis_codes: optional anatomical direction of each axis, recorded as is.
    """
    size = tuple(float(s) for s in spacing)
    if len(size) != 3 or not all(np.isfinite(s) and s > 0 for s in size):
        raise ValueError(f"spacing must be three positive sizes in mm, got {tuple(spacing)}")
    found = components(mask)
    count = found.count
    if count == 0:
        return LesionStats(spacing_mm=size, lesions=(), axis_codes=axis_codes)
    voxels = np.bincount(found.lesion, minlength=count + 1)[1:]
    # the centroid as scipy.ndimage.center_of_mass computes it: float64 sums in C order, / count
    weights = np.bincount(found.lesion, weights=np.ones(found.lesion.size), minlength=count + 1)[1:]
    centroids = np.stack([np.bincount(found.lesion, weights=found.coordinates[:, axis].astype(np.float64),
                                      minlength=count + 1)[1:] / weights for axis in range(3)], axis=1)
    first = np.full((count, 3), np.iinfo(np.int64).max)
    last = np.full((count, 3), -1)
    for axis in range(3):
        np.minimum.at(first[:, axis], found.lesion - 1, found.coordinates[:, axis])
        np.maximum.at(last[:, axis], found.lesion - 1, found.coordinates[:, axis])
    lesions = tuple(
        Lesion(
            label=i + 1,
            voxels=int(voxels[i]),
            volume_mm3=int(voxels[i]) * voxel_volume_mm3(size),
            extent_mm=tuple(int(last[i, axis] - first[i, axis] + 1) * size[axis] for axis in range(3)),  # type: ignore[arg-type]
            centroid_vox=tuple(float(c) for c in centroids[i]),  # type: ignore[arg-type]
        )
        for i in range(count)
    )
    return LesionStats(spacing_mm=size, lesions=lesions, axis_codes=axis_codes)


def sidecar_paths(mask_path: Path, folder: Path | None = None) -> tuple[Path, Path]:
    """`<mask stem>_lesions.tsv` and `<mask stem>_lesions.json`, in `folder` (default: the mask's)."""
    mask_path = Path(mask_path)
    where = Path(folder) if folder is not None else mask_path.parent
    name = stem(mask_path)
    return where / f"{name}_lesions.tsv", where / f"{name}_lesions.json"


def tsv_text(stats: LesionStats) -> str:
    """One header line (`TSV_COLUMNS`) and one line per lesion; mm and voxel values to 3 decimals."""
    lines = ["\t".join(TSV_COLUMNS)]
    for lesion in stats.lesions:
        values = (lesion.volume_mm3, *lesion.extent_mm, *lesion.centroid_vox)
        lines.append("\t".join([str(lesion.label), str(lesion.voxels), *(f"{v:.3f}" for v in values)]))
    return "\n".join(lines) + "\n"


def stats_record(stats: LesionStats, *, mask_path: Path | None = None) -> dict:
    """`stats.to_dict()`, led by the mask's absolute path as "mask" when given."""
    record = stats.to_dict()
    if mask_path is not None:
        record = {"mask": str(Path(mask_path).resolve()), **record}
    return record


def json_text(stats: LesionStats, *, mask_path: Path | None = None) -> str:
    """`stats_record` as indented JSON."""
    return json.dumps(stats_record(stats, mask_path=mask_path), indent=1) + "\n"


def write_sidecars(stats: LesionStats, mask_path: Path, folder: Path | None = None) -> tuple[Path, Path]:
    """Write the TSV and JSON sidecars of `mask_path` (see `sidecar_paths`), each atomically."""
    tsv, js = sidecar_paths(mask_path, folder)
    tsv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(tsv, tsv_text(stats))
    atomic_write_text(js, json_text(stats, mask_path=mask_path))
    return tsv, js


SOFT_THRESHOLD = 0.5


def lesion_voxels(mask: np.ndarray, *, soft_threshold: float = SOFT_THRESHOLD) -> np.ndarray:
    """The lesion voxels (uint8 0/1, the mask's grid) of an (x, y, z) lesion mask: values > 0, or,
    for a soft map (float values in [0, 1], e.g. an ensemble's vote fraction), values >= `soft_threshold`."""
    if mask.dtype.kind == "f" and mask.size and mask.max() <= 1:
        return (mask >= soft_threshold).astype(np.uint8)
    return (mask > 0).astype(np.uint8)


def file_mask(mask: Image) -> np.ndarray:
    """A loaded mask file's voxels with the kind its file stores: a float file stays a (possibly
    soft) float map, an integer file is a mask (> 0 inside)."""
    if np.issubdtype(mask.header.get_data_dtype(), np.floating):
        return mask.data
    return (mask.data > 0).astype(np.uint8)


def image_stats(mask: np.ndarray, image: Image) -> LesionStats:
    """`lesion_stats` of a lesion mask (see `lesion_voxels`) on `image`'s grid, with its voxel size and axis codes."""
    return lesion_stats(lesion_voxels(mask), image.spacing, axis_codes=image.axis_codes)
