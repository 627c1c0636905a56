"""Spinal-cord centerline from the `_ctr` CNN heatmap (SCT deepseg_sc `find_centerline(algo='cnn')`).

SCT runs a 2D CNN on 80x80 blocks of every axial slice of the image resampled in-plane to 0.5 mm
and regularises the heatmap with OptiC, an external binary. We keep SCT's network and
preprocessing and replace OptiC with our own tracking (see `track_centerline`): the cord is the
heatmap's > 0.5 component followed from the most confident slice up and down, missing slices are
interpolated, and the path is smoothed along z in millimetres.

Arrays are (x, y, z) with z the axial (slice) axis, RPI orientation, spacings in mm.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from lesionseg.server.pipelines import Predict

BLOCK = 80
#: SCT deepseg_sc `_ctr` z-score constants (after scaling to 0-255 by the 2nd/98th percentiles).
CTR_NORMALISATION = {
    "t2": (51.1417, 57.4408),
    "t2s": (68.8591, 71.4659),
    "t1": (55.7359, 64.3149),
    "dwi": (55.744, 45.003),
}


class CenterlineError(ValueError):
    """No spinal cord could be found."""


def scale_intensity(data: np.ndarray) -> np.ndarray:
    """Clip to the 2nd/98th percentiles and map linearly onto 0-255 (skimage rescale_intensity)."""
    p2, p98 = np.percentile(data, (2, 98))
    if p98 <= p2:
        return np.zeros_like(data, dtype=np.float32)
    clipped = np.clip(data, p2, p98)
    return ((clipped - p2) / (p98 - p2) * 255.0).astype(np.float32)


def normalise_for_ctr(data: np.ndarray, contrast: str) -> np.ndarray:
    mean, std = CTR_NORMALISATION[contrast]
    return ((scale_intensity(data) - mean) / std).astype(np.float32)


def blocks_layout(shape_xy: tuple[int, int]) -> tuple[int, int]:
    """Number of 80x80 blocks along x and y covering a slice (zero padding at the far ends)."""
    return max(1, math.ceil(shape_xy[0] / BLOCK)), max(1, math.ceil(shape_xy[1] / BLOCK))


def to_blocks(volume: np.ndarray) -> np.ndarray:
    """(x, y, z) volume -> (z * bx * by, 80, 80, 1) blocks, slice-major, zero padded."""
    nx, ny, nz = volume.shape
    bx, by = blocks_layout((nx, ny))
    padded = np.zeros((bx * BLOCK, by * BLOCK, nz), np.float32)
    padded[:nx, :ny] = volume
    blocks = padded.reshape(bx, BLOCK, by, BLOCK, nz).transpose(4, 0, 2, 1, 3)
    return blocks.reshape(nz * bx * by, BLOCK, BLOCK, 1)


def from_blocks(blocks: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of `to_blocks`: (z * bx * by, 80, 80, 1) -> (x, y, z)."""
    nx, ny, nz = shape
    bx, by = blocks_layout((nx, ny))
    grid = blocks.reshape(nz, bx, by, BLOCK, BLOCK).transpose(1, 3, 2, 4, 0)
    return grid.reshape(bx * BLOCK, by * BLOCK, nz)[:nx, :ny]


def heatmap(volume: np.ndarray, contrast: str, predict: Predict) -> np.ndarray:
    """Cord probability per voxel: the `_ctr` network over every 80x80 block of every slice.

    Args:
        volume: (x, y, z) image resampled in-plane to 0.5 mm.
        contrast: which normalisation constants ("t2", "t2s", "t1", "dwi").
        predict: runs the network on (N, 80, 80, 1) float32 blocks, returns (N, 80, 80, 1).
    """
    blocks = to_blocks(normalise_for_ctr(volume, contrast))
    return from_blocks(predict(blocks), volume.shape).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Centerline:
    """Cord centre per slice: `x[z]`, `y[z]` voxel coordinates; `found[z]` where the heatmap (or
    the user's mask) had it; `covered[z]` where the pipeline segments (None: every slice, as for
    the tracked CNN centerline, which is interpolated over gaps)."""

    x: np.ndarray
    y: np.ndarray
    found: np.ndarray
    covered: np.ndarray | None = None

    def covers(self, z: int) -> bool:
        return True if self.covered is None else bool(self.covered[z])

    def mask(self, shape: tuple[int, int, int]) -> np.ndarray:
        """uint8 (x, y, z) mask with one voxel per slice."""
        out = np.zeros(shape, np.uint8)
        xs = np.clip(np.rint(self.x).astype(int), 0, shape[0] - 1)
        ys = np.clip(np.rint(self.y).astype(int), 0, shape[1] - 1)
        out[xs, ys, np.arange(shape[2])] = 1
        return out

    def coordinates(self) -> np.ndarray:
        """(z, 3) float32 array of (x, y, z) voxel coordinates."""
        return np.stack([self.x, self.y, np.arange(len(self.x), dtype=float)], axis=1).astype(np.float32)


def _candidates(prob: np.ndarray, threshold: float) -> list[tuple[float, float, float]]:
    """(mass, cx, cy) of each connected region of one slice above `threshold`."""
    labels, count = ndimage.label(prob > threshold)
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    masses = ndimage.sum(prob, labels, index)
    centres = ndimage.center_of_mass(prob, labels, index)
    return [(float(m), float(c[0]), float(c[1])) for m, c in zip(masses, centres)]


def track_centerline(
    prob: np.ndarray, spacing: tuple[float, float, float], *, threshold: float = 0.5,
    max_shift_mm: float = 10.0, smoothing_mm: float = 5.0, starts_tried: int = 8,
) -> Centerline:
    """Follow the cord through the heatmap (our replacement for OptiC).

    From each of the `starts_tried` heaviest regions, walks up and down choosing in each slice
    the region nearest the previous centre (within `max_shift_mm` plus half a slice thickness of
    leeway per skipped slice), ties broken by mass; the track gathering the most heatmap mass wins
    (a bright blob that does not continue through the slices loses to the cord). Slices without an acceptable region are
    linearly interpolated (constant beyond the ends); the path is smoothed with a Gaussian of
    `smoothing_mm` along z.

    Raises:
        CenterlineError: no slice has any region above `threshold`.
    """
    nz = prob.shape[2]
    per_slice = [_candidates(prob[:, :, z], threshold) for z in range(nz)]
    if not any(per_slice):
        raise CenterlineError("no spinal cord found: the centerline network detected nothing")
    # try the heaviest regions as starting points; keep the track that gathers the most mass
    starts = sorted(((c[0], z, c[1], c[2]) for z in range(nz) for c in per_slice[z]), reverse=True)[:starts_tried]
    best_track, best_mass = None, -1.0
    for _, z0, x0, y0 in starts:
        track, mass = _follow(per_slice, z0, x0, y0, spacing, max_shift_mm)
        if mass > best_mass:
            best_track, best_mass = track, mass
    assert best_track is not None  # noqa: S101 - starts is not empty
    xs, ys = best_track
    found = ~np.isnan(xs)
    zs = np.arange(nz)
    xs = np.interp(zs, zs[found], xs[found])
    ys = np.interp(zs, zs[found], ys[found])
    sigma = smoothing_mm / spacing[2]
    if nz > 1 and sigma > 0.3:
        xs = ndimage.gaussian_filter1d(xs, sigma, mode="nearest")
        ys = ndimage.gaussian_filter1d(ys, sigma, mode="nearest")
    return Centerline(x=xs, y=ys, found=found)


def _follow(
    per_slice: list[list[tuple[float, float, float]]], start: int, x0: float, y0: float,
    spacing: tuple[float, float, float], max_shift_mm: float,
) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """One track from (x0, y0) in slice `start`: per-slice centres (NaN where none) and its mass."""
    nz = len(per_slice)
    xs, ys = np.full(nz, np.nan), np.full(nz, np.nan)
    xs[start], ys[start] = x0, y0
    total = max(c[0] for c in per_slice[start] if (c[1], c[2]) == (x0, y0))
    dx, dy, dz = spacing
    for direction in (1, -1):
        last, gap = start, 0
        z = start + direction
        while 0 <= z < nz:
            gap += 1
            reach = max_shift_mm + gap * dz * 0.5
            best = None
            for mass, cx, cy in per_slice[z]:
                dist = math.hypot((cx - xs[last]) * dx, (cy - ys[last]) * dy)
                if dist <= reach and (best is None or (dist, -mass) < best[0]):
                    best = ((dist, -mass), cx, cy, mass)
            if best is not None:
                xs[z], ys[z] = best[1], best[2]
                total += best[3]
                last, gap = z, 0
            z += direction
    return (xs, ys), total


def centerline_from_mask(mask: np.ndarray) -> Centerline:
    """A user-given centerline (`-centerline file`, resampled to the working grid): the weighted
    centre of mass of each slice. As in SCT, slices the mask does not cover are not segmented.

    Raises:
        CenterlineError: the mask is empty.
    """
    nz = mask.shape[2]
    xs, ys = np.full(nz, np.nan), np.full(nz, np.nan)
    for z in range(nz):
        if np.any(mask[:, :, z] > 0):
            xs[z], ys[z] = ndimage.center_of_mass(np.clip(mask[:, :, z], 0, None))
    found = ~np.isnan(xs)
    if not found.any():
        raise CenterlineError("the centerline file is empty")
    zs = np.arange(nz)
    return Centerline(x=np.interp(zs, zs[found], xs[found]), y=np.interp(zs, zs[found], ys[found]), found=found,
                      covered=found)
