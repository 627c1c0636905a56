"""SCT's legacy MS-lesion pipeline (`sct_deepseg_lesion`) as pure numpy steps.

`segment_lesions` runs the whole chain on one RPI volume; the networks are injected as
`predict` callables so the same code runs under Triton (BLS requests) and in-process (tests,
benchmarks). Arrays are (x, y, z), RPI orientation (nibabel L, A, S), spacings in mm.

Steps (SCT `deepseg_/lesion.py`, same in 5.7 and 6.x):
1. resample in-plane to 0.5 x 0.5 mm, keeping the slice thickness (linear);
2. centerline: `_ctr` CNN heatmap + tracking (`legacy_centerline.py`), or the user's centerline mask;
3. crop 48 x 48 voxels per slice around the centerline (SCT's window placement, `crop_start`);
4. landmark histogram normalisation of the crop (`normalise_landmarks`);
5. resample the crop to 0.5 mm isotropic; 3D CNN on consecutive 48^3 chunks along z (the last
   chunk zero padded, all-zero chunks skipped) after a z-score; each chunk binarised `> 0.1`;
6. resample (linear, so soft again) back to the crop's z spacing, uncrop into the 0.5 mm in-plane
   grid (`res_prob`, SCT's `_res_RPI_seg`), resample to the native grid (`prob`, `_RPI_seg`),
   binarise `prob >= 0.1` (`seg`, `_lesionseg`): the one threshold of the lesion mask, here.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from lesionseg.core.grid import new_shape_for, resample_to_shape
from lesionseg.core.limits import check_resampled
from lesionseg.server.pipelines import Predict
from lesionseg.server.pipelines import legacy_centerline as ctr

CROP = 48
CHUNK = 48
IN_PLANE_MM = 0.5
THRESHOLD = 0.1
PERCENTILES = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContrastParams:
    """Constants of one contrast's pipeline; `threshold` binarises the lesion probability (>=)."""

    contrast: str
    ctr_contrast: str
    landmarks: tuple[float, ...]
    mean: float
    std: float
    threshold: float = THRESHOLD


CONTRASTS = {
    "t2": ContrastParams(
        contrast="t2", ctr_contrast="t2", mean=871.309, std=557.916,
        landmarks=(0, 136.832187, 312.158435, 448.968030, 568.657779, 696.671586, 859.221138,
                   1074.463414, 1373.289174, 1811.522669, 2611),
    ),
    "t2_ax": ContrastParams(
        contrast="t2_ax", ctr_contrast="t2", mean=835.592, std=528.386,
        landmarks=(0, 112.195357, 291.611185, 446.727066, 581.103970, 702.979079, 833.318257,
                   1011.856313, 1268.801813, 1687.137075, 2611),
    ),
    "t2s": ContrastParams(
        contrast="t2s", ctr_contrast="t2s", mean=1011.31, std=678.985,
        landmarks=(0, 123.246969, 226.422561, 338.361023, 532.341924, 788.693675, 1096.975553,
                   1407.979466, 1716.524530, 2079.788451, 2611),
    ),
}

def _exp_model(xs: Sequence[float], ys: Sequence[float], s2: float) -> Callable[[np.ndarray], np.ndarray]:
    """SCT's exponential extrapolation through (x1, y1), (x2, y2) with asymptote `s2`."""
    x1, x2 = xs
    y1, y2 = ys
    if x2 == x1:
        return lambda x: np.full_like(x, y2, dtype=np.float64)
    m = (y2 - y1) / (x2 - x1)
    b = y1 - m * x1
    omega = m * x2 - s2 + b
    if omega == 0:
        return lambda x: m * x + b
    beta = omega * np.exp(-m * x2 / omega)
    gamma = m / omega
    return lambda x: s2 + beta * np.exp(gamma * x)


def normalise_landmarks(data: np.ndarray, landmarks: Sequence[float]) -> np.ndarray:
    """Landmark histogram normalisation: the percentiles [1, 10, ..., 90, 99] of `data` map
    piecewise linearly onto `landmarks`; values beyond the 1st / 99th percentile follow SCT's
    exponential extrapolation. Returns float32 of `data`'s shape."""
    from scipy.interpolate import interp1d

    values = data.astype(np.float32).astype(np.float64)
    current = np.percentile(values, PERCENTILES)
    # SCT: interp1d(bounds_error=False); with repeated percentiles (many zero voxels) it maps the
    # repeated value onto the landmark of the last repeat, as SciPy >= 1.10 does
    out = interp1d(current, landmarks, bounds_error=False)(values)
    low, high = values < current[0], values > current[-1]
    if low.any():
        out[low] = _exp_model(current[:2], landmarks[:2], landmarks[0])(values[low])
    if high.any():
        out[high] = _exp_model(current[-3:-1], landmarks[-3:-1], landmarks[-1])(values[high])
    return out.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Crop:
    """Per-slice origin (x_start, y_start) of the 48 x 48 crop of slice z."""

    x_start: np.ndarray
    y_start: np.ndarray


def crop_start(centre: float, size: int, dim: int) -> tuple[int, int]:
    """SCT's `_find_crop_start_end`: [int(c) - size/2 + 1, int(c) + size/2 + 1), moved back inside."""
    start, end = int(centre) - size // 2 + 1, int(centre) + size // 2 + 1
    if end > dim:
        end, start = dim, max(dim - size, 0)
    if start < 0:
        start, end = 0, min(size, dim)
    return start, end


def crop_around(volume: np.ndarray, line: ctr.Centerline, size: int = CROP) -> tuple[np.ndarray, Crop]:
    """Cut `size` x `size` voxels per slice around the centerline, the window kept inside the
    image; slices the centerline does not cover stay zero (recorded with start -1)."""
    nx, ny, nz = volume.shape
    out = np.zeros((size, size, nz), np.float32)
    xs, ys = np.full(nz, -1), np.full(nz, -1)
    for z in range(nz):
        if not line.covers(z):
            continue
        (x0, x1), (y0, y1) = crop_start(line.x[z], size, nx), crop_start(line.y[z], size, ny)
        out[: x1 - x0, : y1 - y0, z] = volume[x0:x1, y0:y1, z]
        xs[z], ys[z] = x0, y0
    return out, Crop(x_start=xs, y_start=ys)


def uncrop(cropped: np.ndarray, crop: Crop, shape: tuple[int, int, int]) -> np.ndarray:
    """Paste each recorded slice's crop back at its origin into a zero volume of `shape`."""
    nx, ny, nz = shape
    size = cropped.shape[0]
    out = np.zeros(shape, np.float32)
    for z in range(nz):
        x0, y0 = crop.x_start[z], crop.y_start[z]
        if x0 < 0:
            continue
        x1, y1 = min(x0 + size, nx), min(y0 + size, ny)
        out[x0:x1, y0:y1, z] = cropped[: x1 - x0, : y1 - y0, z]
    return out


def segment_chunks(volume: np.ndarray, params: ContrastParams, predict: Predict) -> np.ndarray:
    """The 3D lesion CNN over consecutive 48^3 chunks along z of a (48, 48, Z) 0.5 mm volume.

    The last chunk is zero padded; chunks that are all zero are skipped; each chunk's output is
    binarised `> 0.1` (as SCT does inside its chunk loop). `predict` takes (N, 1, 48, 48, 48)
    float32 and returns probabilities of the same shape. Returns 0/1 float32.
    """
    nz = volume.shape[2]
    starts = list(range(0, nz, CHUNK))
    chunks, keep = [], []
    for z0 in starts:
        part = np.zeros((CROP, CROP, CHUNK), np.float32)
        part[:, :, : min(CHUNK, nz - z0)] = volume[:, :, z0 : z0 + CHUNK]
        if np.any(part):
            chunks.append((part - params.mean) / params.std)
            keep.append(z0)
    out = np.zeros(volume.shape, np.float32)
    if not chunks:
        return out
    probs = predict(np.stack(chunks)[:, None].astype(np.float32))[:, 0]
    for prob, z0 in zip(probs, keep):
        n = min(CHUNK, nz - z0)
        out[:, :, z0 : z0 + n] = prob[:, :, :n] > THRESHOLD
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class LesionResult:
    """Outputs on the RPI grids: `seg` uint8 native grid (binary, SCT's `_lesionseg`), `prob`
    float32 native grid (soft, `_RPI_seg`), `res_prob` float32 on the 0.5 x 0.5 mm in-plane grid
    (soft, `_res_RPI_seg`), `centerline` on the native grid."""

    seg: np.ndarray
    prob: np.ndarray
    res_prob: np.ndarray
    res_spacing: tuple[float, float, float]
    centerline: ctr.Centerline


def segment_lesions(
    image: np.ndarray, spacing: Sequence[float], params: ContrastParams, *,
    ctr_predict: Predict | None, lesion_predict: Predict, centerline_mask: np.ndarray | None = None,
) -> LesionResult:
    """The whole legacy pipeline on one RPI volume (see the module docstring).

    Args:
        image: (x, y, z) float32 RPI volume.
        spacing: voxel size in mm along x, y, z.
        params: the contrast's constants.
        ctr_predict: the `_ctr` network (unused when `centerline_mask` is given).
        lesion_predict: the 3D lesion network.
        centerline_mask: optional (x, y, z) mask of the cord centerline on the native grid.
    Raises:
        centerline.CenterlineError: no cord found.
    """
    spacing = tuple(float(s) for s in spacing)
    native_shape = image.shape
    res_shape = new_shape_for(native_shape, spacing, (IN_PLANE_MM, IN_PLANE_MM, spacing[2]))
    res_shape = (res_shape[0], res_shape[1], native_shape[2])
    check_resampled(res_shape, what="IMAGE")
    res_spacing = (spacing[0] * native_shape[0] / res_shape[0], spacing[1] * native_shape[1] / res_shape[1], spacing[2])
    res = resample_to_shape(image.astype(np.float32), res_shape, order=1)

    if centerline_mask is not None:
        res_mask = resample_to_shape(centerline_mask.astype(np.float32), res_shape, order=1)
        line = ctr.centerline_from_mask(res_mask)
    else:
        if ctr_predict is None:
            raise ValueError("a centerline network or a centerline mask is required")
        prob_ctr = ctr.heatmap(res, params.ctr_contrast, ctr_predict)
        line = ctr.track_centerline(prob_ctr, res_spacing)

    cropped, crop = crop_around(res, line)
    normalised = normalise_landmarks(cropped, params.landmarks)
    iso_shape = (CROP, CROP, max(1, int(round(res_shape[2] * spacing[2] / IN_PLANE_MM))))
    check_resampled(iso_shape, what="IMAGE (its cord crop)")
    iso = resample_to_shape(normalised, iso_shape, order=1)
    prob_iso = segment_chunks(iso, params, lesion_predict)
    prob_crop = resample_to_shape(prob_iso, cropped.shape, order=1)
    res_prob = uncrop(prob_crop, crop, res_shape)
    prob = resample_to_shape(res_prob, native_shape, order=1)
    seg = (prob >= params.threshold).astype(np.uint8)
    native_line = ctr.Centerline(
        x=line.x * native_shape[0] / res_shape[0],
        y=line.y * native_shape[1] / res_shape[1],
        found=line.found,
        covered=line.covered,
    )
    return LesionResult(seg=seg, prob=prob, res_prob=res_prob, res_spacing=res_spacing, centerline=native_line)
