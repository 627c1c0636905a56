"""Voxel-grid resampling exactly as SCT's `resample_nib` does it.

A volume of `shape` voxels of `spacing` mm is resampled to `new_shape = round(shape * spacing /
new_spacing)` voxels. SCT's new affine is the old one times diag(f), f = shape / new_shape per
axis, with no translation: voxel i of the new grid samples old voxel coordinate `i * f` (the
first voxel centres coincide), and samples past the last old voxel repeat it (mode 'nearest').
Resampling back to the old spacing therefore restores the old shape. `zoomed_affine` gives the
matching affine so a client can write the resampled volume.
Arrays are (x, y, z) in the caller's orientation; spacings in mm.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def new_shape_for(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxel counts covering the same extent at `new_spacing` (at least 1 per axis)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, new_spacing))


def grid_coordinates(shape: Sequence[int], new_shape: Sequence[int]) -> list[np.ndarray]:
    """Per axis, the old voxel coordinates of the new voxel centres (SCT: i * shape / new_shape)."""
    return [np.arange(m) * (n / m) for n, m in zip(shape, new_shape)]


def resample_to_shape(data: np.ndarray, new_shape: Sequence[int], *, order: int = 1) -> np.ndarray:
    """Resample a 3D array onto a `new_shape` grid with the same field of view.

    Args:
        data: (x, y, z) array.
        new_shape: target voxel counts.
        order: spline order (0 nearest, 1 linear as SCT's 'linear', 3 cubic).
    Returns:
        float32 array of `new_shape`; samples past the last voxel repeat it.
    """
    if tuple(new_shape) == data.shape:
        return data.astype(np.float32, copy=True)
    axes = grid_coordinates(data.shape, new_shape)
    # separable: the grid is a tensor product, so resample one axis at a time (fast, exact for order <= 1)
    out = data.astype(np.float32, copy=False)
    for axis, coords in enumerate(axes):
        if out.shape[axis] == len(coords) and np.allclose(coords, np.arange(len(coords))):
            continue
        out = _resample_axis(out, axis, coords, order)
    return out


def _resample_axis(data: np.ndarray, axis: int, coords: np.ndarray, order: int) -> np.ndarray:
    n = data.shape[axis]
    if order == 0:
        index = np.clip(np.rint(coords).astype(int), 0, n - 1)
        return np.take(data, index, axis=axis)
    if order == 1:
        c = np.clip(coords, 0, n - 1)
        lo = np.floor(c).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        w = (c - lo).astype(np.float32)
        shape = [1] * data.ndim
        shape[axis] = len(c)
        w = w.reshape(shape)
        return np.take(data, lo, axis=axis) * (1 - w) + np.take(data, hi, axis=axis) * w
    from scipy import ndimage

    moved = np.moveaxis(data, axis, 0)
    grid = np.meshgrid(coords, *[np.arange(s) for s in moved.shape[1:]], indexing="ij")
    result = ndimage.map_coordinates(moved, grid, order=order, mode="nearest")
    return np.moveaxis(result.astype(np.float32), 0, axis)


def zoomed_affine(affine: np.ndarray, shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    """The affine of the `new_shape` grid that `resample_to_shape` produces from (`affine`, `shape`)."""
    factors = np.array([n / m for n, m in zip(shape, new_shape)], dtype=float)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factors)
    return np.asarray(affine, dtype=float) @ scale
