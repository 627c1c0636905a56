"""Checks every segmentation model applies to its IMAGE / SPACING inputs."""

from __future__ import annotations

import numpy as np

from lesionseg.core.wire import MAX_VOXELS
from lesionseg.server.backend.base import RequestError

#: The smallest image worth segmenting: at least two axes (a cross-section, e.g. one axial slice)
#: with this many voxels spanning this many mm. Anything smaller (1x1x1, 2x2x2, a line of voxels)
#: holds no spinal cord and is far below every network's field of view (48 to 128 voxels).
MIN_AXIS_VOXELS = 4
MIN_AXIS_MM = 5.0


def check_volume(image: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refuse an IMAGE / SPACING pair no pipeline can segment (RequestError with the reason)."""
    spacing = spacing.astype(np.float64)
    if image.ndim != 3 or min(image.shape) < 1 or image.size > MAX_VOXELS:
        raise RequestError(f"IMAGE must be a 3D volume of at most {MAX_VOXELS} voxels, got shape {list(image.shape)}")
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise RequestError(f"SPACING must be 3 positive finite numbers, got {spacing.tolist()}")
    extent = np.asarray(image.shape) * spacing
    if np.count_nonzero((np.asarray(image.shape) >= MIN_AXIS_VOXELS) & (extent >= MIN_AXIS_MM)) < 2:
        size = " x ".join(f"{e:.3g}" for e in extent)
        raise RequestError(f"IMAGE of shape {list(image.shape)} ({size} mm) is too small to segment: at least two axes "
                           f"must have {MIN_AXIS_VOXELS} voxels and {MIN_AXIS_MM:g} mm")
    if not np.all(np.isfinite(image)):
        raise RequestError("IMAGE contains NaN or infinite values")
    if not np.any(image):
        raise RequestError("IMAGE is all zero")
    return image, spacing
