"""SCT 6.5's contrast-agnostic MONAI inference (`spinalcordtoolbox/deepseg/monai.py`) in numpy.

The client sends the volume reoriented to MONAI's "RPI" (nibabel axis codes R, P, I, i.e. SCT's
"LAS") as an (x, y, z) array with its spacing. Then, as SCT's MONAI transforms do:
1. resample to 1 mm isotropic with an order-2 spline (MONAI Spacing: the first voxel centres
   coincide, new shape round((n - 1) * old / new) + 1, edge samples repeat the border);
2. centre crop or pad (edge) to 64 x 192 x (unchanged) and pad (edge) to a multiple of 32;
3. z-score over the whole padded volume;
4. sliding window over 64 x 192 x 320 windows, overlap 0.5, gaussian weights (sigma 0.125 of the
   window), constant-0 padding when the volume is smaller than a window;
5. ReLU, divided by its maximum; every step undone (crop, pad, spline resampling back);
   values <= 0.1 set to 0 and values above 1 clipped to 1.
The result is a soft map on the client's grid; SCT binarises it `> 0.5` by default.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import ClassVar, Sequence

import numpy as np
from scipy import ndimage

from lesionseg.core.limits import check_resampled
from lesionseg.server.pipelines import JsonPlan, Predict


@dataclasses.dataclass(frozen=True, kw_only=True)
class MonaiPlan(JsonPlan):
    orientation: str = "LAS"  # SCT code of MONAI's axcodes "RPI"
    pixdim: tuple[float, float, float] = (1.0, 1.0, 1.0)
    spline_order: int = 2
    spatial_size: tuple[int, int, int] = (64, 192, -1)
    divisible: int = 32
    roi_size: tuple[int, int, int] = (64, 192, 320)
    overlap: float = 0.5
    sigma_scale: float = 0.125
    floor: float = 0.1
    threshold: float = 0.5  # SCT's default -thr for this model (strictly greater)
    network: str = ""
    labels: dict[str, int] = dataclasses.field(default_factory=lambda: {"background": 0, "cord": 1})

    TUPLES: ClassVar[tuple[str, ...]] = ("pixdim", "spatial_size", "roi_size")


def spacing_shape(shape: Sequence[int], spacing: Sequence[float], pixdim: Sequence[float]) -> tuple[int, ...]:
    """MONAI Spacing's output shape: round((n - 1) * old / new) + 1."""
    return tuple(int(round((n - 1) * s / p)) + 1 for n, s, p in zip(shape, spacing, pixdim))


def spline_resample(data: np.ndarray, step: Sequence[float], shape: Sequence[int], order: int) -> np.ndarray:
    """Sample `data` at voxel coordinates i * step (per axis) on a grid of `shape`; spline of
    `order` with scipy's prefilter, samples outside repeat the border (MONAI padding 'border')."""
    if tuple(shape) == data.shape and all(abs(s - 1) < 1e-9 for s in step):
        return data.astype(np.float32, copy=True)
    coords = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, step)], indexing="ij", sparse=False)
    return ndimage.map_coordinates(data.astype(np.float64), coords, order=order, mode="nearest").astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What `postprocess` needs to undo `preprocess`: shapes and the pad/crop per axis."""

    native_shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    resampled_shape: tuple[int, int, int]
    crop: tuple[tuple[int, int], ...]  # (start, stop) kept from the resampled volume
    pad: tuple[tuple[int, int], ...]  # (before, after) added after the crop (both pads)


def _centre_crop_or_pad(size: int, target: int) -> tuple[tuple[int, int], tuple[int, int]]:
    if target < 0 or target == size:
        return (0, size), (0, 0)
    if size > target:
        start = size // 2 - target // 2
        return (start, start + target), (0, 0)
    diff = target - size
    return (0, size), (diff // 2, diff - diff // 2)


def preprocess(image_xyz: np.ndarray, spacing_xyz: Sequence[float], plan: MonaiPlan) -> tuple[np.ndarray, Geometry]:
    """(x, y, z) volume in the plan's orientation -> normalised network-space volume, Geometry."""
    spacing = tuple(float(s) for s in spacing_xyz)
    shape = spacing_shape(image_xyz.shape, spacing, plan.pixdim)
    check_resampled(shape, what="IMAGE")
    data = spline_resample(image_xyz, [p / s for p, s in zip(plan.pixdim, spacing)], shape, plan.spline_order)
    crops, pads = [], []
    for axis, target in enumerate(plan.spatial_size):
        crop, pad = _centre_crop_or_pad(data.shape[axis], target)
        crops.append(crop)
        pads.append(pad)
    data = data[tuple(slice(a, b) for a, b in crops)]
    data = np.pad(data, pads, mode="edge")
    extra = []
    for n in data.shape:
        diff = (-n) % plan.divisible
        extra.append((diff // 2, diff - diff // 2))
    data = np.pad(data, extra, mode="edge")
    total_pad = tuple((a + c, b + d) for (a, b), (c, d) in zip(pads, extra))
    mean, std = float(data.mean()), float(data.std())
    data = ((data - mean) / std if std > 0 else data - mean).astype(np.float32)
    return data, Geometry(native_shape=tuple(image_xyz.shape), spacing=spacing, resampled_shape=shape,  # type: ignore[arg-type]
                          crop=tuple(crops), pad=total_pad)


def scan_starts(image: int, roi: int, overlap: float) -> list[int]:
    """MONAI's window starts along one axis (`_get_scan_interval` + `dense_patch_slices`)."""
    interval = roi if roi == image else max(int(roi * (1 - overlap)), 1)
    num = int(math.ceil(image / interval))
    count = next((d for d in range(num) if d * interval + roi >= image), None)
    count = 1 if count is None else count + 1
    return [i * interval - max(i * interval + roi - image, 0) for i in range(count)]


def importance_map(roi: Sequence[int], sigma_scale: float) -> np.ndarray:
    """MONAI's gaussian importance map (separable, peak 1, floor max(min, 1e-3))."""
    weights = np.ones((), np.float32)
    for i, n in enumerate(roi):
        x = np.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=np.float32)
        g = np.exp(x**2 / (-2 * (n * sigma_scale) ** 2)).astype(np.float32)
        weights = weights[..., None] * g if i else g
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def sliding_window(data: np.ndarray, plan: MonaiPlan, predict: Predict) -> np.ndarray:
    """(X, Y, Z) normalised volume -> (X, Y, Z) network output (channel 0), MONAI's blending.

    `predict` maps (N, 1, *roi) float32 windows to (N, 1, *roi) outputs."""
    roi = plan.roi_size
    diff = [max(r - n, 0) for r, n in zip(roi, data.shape)]
    pads = [(d // 2, d - d // 2) for d in diff]
    padded = np.pad(data, pads, mode="constant")
    starts = list(itertools.product(*[scan_starts(n, r, plan.overlap) for n, r in zip(padded.shape, roi)]))
    windows = np.stack([padded[tuple(slice(s, s + r) for s, r in zip(start, roi))] for start in starts])[:, None]
    outputs = predict(np.ascontiguousarray(windows, np.float32))[:, 0]
    weight = importance_map(roi, plan.sigma_scale)
    total = np.zeros(padded.shape, np.float32)
    count = np.zeros(padded.shape, np.float32)
    for start, out in zip(starts, outputs):
        window = tuple(slice(s, s + r) for s, r in zip(start, roi))
        total[window] += out * weight
        count[window] += weight
    result = total / count
    return result[tuple(slice(a, a + n) for (a, _), n in zip(pads, data.shape))]


def postprocess(output: np.ndarray, geometry: Geometry, plan: MonaiPlan) -> np.ndarray:
    """Network-space output -> soft map in [0, 1] on the client's (x, y, z) grid."""
    soft = np.maximum(output, 0)
    peak = float(soft.max())
    if peak > 0:
        soft = soft / peak
    soft = soft[tuple(slice(a, n - b) for (a, b), n in zip(geometry.pad, soft.shape))]
    full = np.zeros(geometry.resampled_shape, np.float32)
    full[tuple(slice(a, b) for a, b in geometry.crop)] = soft
    back = spline_resample(full, [s / p for s, p in zip(geometry.spacing, plan.pixdim)], geometry.native_shape, plan.spline_order)
    back[back <= plan.floor] = 0
    return np.minimum(back, 1.0).astype(np.float32)
