"""nnU-Net v2's resampling (`default_resampling.py`) with scipy only.

`resample(data, new_shape, current_spacing, new_spacing, order=3, order_z=0, force_separate_z=None)`
follows nnU-Net: when the spacing is anisotropic (max/min > 3) the low-resolution axis is
resampled separately — each slice in-plane with `order`, then along that axis with `order_z`
(nearest by default). In-plane resizing is skimage's `resize(mode='edge', anti_aliasing=False)`,
i.e. `scipy.ndimage.zoom(grid_mode=True, mode='nearest')` clipped to the input's range.

Arrays are (c, a0, a1, a2) in nnU-Net's (transposed) axis order; spacings in mm per axis.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

ANISO_THRESHOLD = 3


def compute_new_shape(old_shape: Sequence[int], old_spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    return tuple(int(round(s / n * k)) for s, n, k in zip(old_spacing, new_spacing, old_shape))


def _lowres_axis(spacing: Sequence[float]) -> np.ndarray:
    spacing = np.asarray(spacing, dtype=float)
    return np.where(max(spacing) / spacing == 1)[0]


def separate_z(force: bool | None, current: Sequence[float], new: Sequence[float],
               threshold: float = ANISO_THRESHOLD) -> tuple[bool, int | None]:
    """nnU-Net's `determine_do_sep_z_and_axis`."""
    if force is not None:
        axes = _lowres_axis(current) if force else None
        do = bool(force)
    elif max(current) / min(current) > threshold:
        do, axes = True, _lowres_axis(current)
    elif max(new) / min(new) > threshold:
        do, axes = True, _lowres_axis(new)
    else:
        do, axes = False, None
    if axes is not None:
        if len(axes) != 1:
            return False, None
        return do, int(axes[0])
    return do, None


def resize(image: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """skimage.transform.resize(image, shape, order, mode='edge', anti_aliasing=False), float64."""
    image = image.astype(np.float64, copy=False)
    if tuple(shape) == image.shape:
        return image.copy()
    zoom = [n / o for n, o in zip(shape, image.shape)]
    out = ndimage.zoom(image, zoom, order=order, mode="nearest", grid_mode=True)
    if order > 1:  # skimage clips higher-order results to the input range
        np.clip(out, image.min(), image.max(), out=out)
    return out


def resample(data: np.ndarray, new_shape: Sequence[int], current_spacing: Sequence[float], new_spacing: Sequence[float], *,
             order: int = 3, order_z: int = 0, force_separate_z: bool | None = None) -> np.ndarray:
    """Resample (c, a0, a1, a2) `data` to `new_shape` the way nnU-Net resamples images and logits."""
    assert data.ndim == 4  # noqa: S101 - internal contract
    new_shape = tuple(int(v) for v in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    do_separate, axis = separate_z(force_separate_z, current_spacing, new_spacing)
    out = np.zeros((data.shape[0], *new_shape), dtype=data.dtype)
    for c in range(data.shape[0]):
        if do_separate and axis is not None:
            in_plane = [s for i, s in enumerate(new_shape) if i != axis]
            partial_shape = list(new_shape)
            partial_shape[axis] = data.shape[1 + axis]
            partial = np.zeros(partial_shape)
            for k in range(data.shape[1 + axis]):
                index = [slice(None)] * 3
                index[axis] = k
                partial[tuple(index)] = resize(data[c][tuple(index)], in_plane, order)
            if partial.shape[axis] != new_shape[axis]:
                coords = np.meshgrid(*[(np.arange(n) + 0.5) * (o / n) - 0.5 for n, o in zip(new_shape, partial.shape)],
                                     indexing="ij")
                out[c] = ndimage.map_coordinates(partial, coords, order=order_z, mode="nearest")
            else:
                out[c] = partial
        else:
            out[c] = resize(data[c], new_shape, order)
    return out
