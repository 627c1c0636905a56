"""Checks every segmentation model applies to its IMAGE / SPACING inputs."""

from __future__ import annotations

import numpy as np

from lesionseg.server.backend.base import RequestError

MAX_VOXELS = 512 * 512 * 1024


def check_volume(image: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refuse an IMAGE / SPACING pair no pipeline can segment (RequestError with the reason)."""
    spacing = spacing.astype(np.float64)
    if image.ndim != 3 or min(image.shape) < 1 or image.size > MAX_VOXELS:
        raise RequestError(f"IMAGE must be a 3D volume of at most {MAX_VOXELS} voxels, got shape {list(image.shape)}")
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise RequestError(f"SPACING must be 3 positive finite numbers, got {spacing.tolist()}")
    if not np.all(np.isfinite(image)):
        raise RequestError("IMAGE contains NaN or infinite values")
    if not np.any(image):
        raise RequestError("IMAGE is all zero")
    return image, spacing
