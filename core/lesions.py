"""Lesions of a mask: 26-connected components (voxels touching by a face, an edge or a corner
belong to one lesion), as the lesion statistics, QC and parity reports all count them."""

from __future__ import annotations

from typing import Sequence

import numpy as np

CONNECTIVITY = 26


def voxel_volume_mm3(spacing: Sequence[float]) -> float:
    """Volume of one voxel (mm3) from its (x, y, z) size in mm."""
    return float(np.prod(np.asarray(spacing, dtype=np.float64)))


def label_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected lesions of an (x, y, z) mask under 26-connectivity.

    Returns:
        (labels, n): int32 (x, y, z) array with 0 outside lesions and 1..n inside, numbered by
        first voxel in C order; n the number of lesions.
    """
    from scipy import ndimage

    if mask.ndim != 3:
        raise ValueError(f"lesion mask must be 3D (x, y, z), got shape {mask.shape}")
    labels, count = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), dtype=bool))
    return labels.astype(np.int32, copy=False), int(count)
