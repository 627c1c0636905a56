"""The images of a QC entry: axial mosaics and sagittal panels of an RPI volume with mask overlays.

The axial mosaic has one tile per slice, cropped around the cord centre (18 mm radius by default),
in radiological view (patient's right on the left, anterior up); the sagittal view has one panel
per lateral offset from the cord centre, superior up and anterior on the left (SCT's sagittal QC
view, from its "SAL" arrays). The overlay is transparent with lesions in red and the cord (mask or
centerline) in cyan. Volumes are (x, y, z) in RPI (x toward the patient's left, y toward
anterior, z toward superior); spacings in mm.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from lesionseg.core.grid import resample_to_shape

TILE_MM_PER_PX = 0.5
MAX_TILES_PER_ROW = 10
LESION_RGBA = (255, 0, 0, 255)
CORD_RGBA = (0, 255, 255, 160)


def _tile_crop(slice_2d: np.ndarray, cx: float, cy: float, half_x: int, half_y: int) -> np.ndarray:
    nx, ny = slice_2d.shape
    out = np.zeros((2 * half_x, 2 * half_y), slice_2d.dtype)
    x0, y0 = int(round(cx)) - half_x, int(round(cy)) - half_y
    sx, sy = slice(max(x0, 0), min(x0 + 2 * half_x, nx)), slice(max(y0, 0), min(y0 + 2 * half_y, ny))
    if sx.start < sx.stop and sy.start < sy.stop:
        out[sx.start - x0 : sx.stop - x0, sy.start - y0 : sy.stop - y0] = slice_2d[sx, sy]
    return out


def axial_mosaic(
    image: np.ndarray, spacing: Sequence[float], centre_xy: np.ndarray, *,
    lesion: np.ndarray | None = None, cord: np.ndarray | None = None, radius_mm: float = 18.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Background (grayscale uint8) and overlay (RGBA uint8) mosaics of every axial slice.

    Args:
        image: (x, y, z) RPI volume (x toward left, y toward anterior, z toward superior).
        spacing: voxel size in mm.
        centre_xy: (z, 2) cord centre per slice in voxel coordinates.
        lesion, cord: optional (x, y, z) masks drawn red and cyan.
    Returns:
        (rows, cols) background and (rows, cols, 4) overlay, tiles left to right, inferior first.
    """
    nz = image.shape[2]
    half_x = max(1, int(round(radius_mm / spacing[0])))
    half_y = max(1, int(round(radius_mm / spacing[1])))
    tile = max(8, int(round(2 * radius_mm / TILE_MM_PER_PX)))
    per_row = min(MAX_TILES_PER_ROW, nz)
    rows = math.ceil(nz / per_row)
    background = np.zeros((rows * tile, per_row * tile), np.uint8)
    overlay = np.zeros((rows * tile, per_row * tile, 4), np.uint8)
    crops = [_tile_crop(image[:, :, z], *centre_xy[z], half_x, half_y) for z in range(nz)]
    values = np.concatenate([c.ravel() for c in crops])
    lo, hi = np.percentile(values, (1, 99.5)) if values.size else (0.0, 1.0)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    for z in range(nz):
        r, c = divmod(z, per_row)
        window = (slice(r * tile, (r + 1) * tile), slice(c * tile, (c + 1) * tile))

        def view(a: np.ndarray, order: int) -> np.ndarray:
            # (x, y) -> display (row = anterior up, col = x: patient's right on the left)
            return resample_to_shape(a[:, :, None].astype(np.float32), (tile, tile, 1), order=order)[:, :, 0].T[::-1]

        background[window] = np.clip((view(crops[z], 1) - lo) * scale, 0, 255).astype(np.uint8)
        for mask, colour in ((cord, CORD_RGBA), (lesion, LESION_RGBA)):
            if mask is not None:
                drawn = view(_tile_crop(mask[:, :, z], *centre_xy[z], half_x, half_y), 0) > 0.5
                overlay[window][drawn] = colour
    return background, overlay


def cord_centres(cord: np.ndarray) -> np.ndarray:
    """(z, 2) cord centre (x, y) per axial slice of an (x, y, z) mask, in voxel coordinates: the
    centre of mass of each slice, linearly interpolated (and held constant past the ends) over
    slices without cord, as SCT's QC does. Raises ValueError when the mask is empty."""
    nz = cord.shape[2]
    weights = (cord > 0).astype(np.float64)
    counts = weights.sum(axis=(0, 1))
    present = np.flatnonzero(counts)
    if present.size == 0:
        raise ValueError("the cord mask is empty")
    xs = np.arange(cord.shape[0], dtype=np.float64)
    ys = np.arange(cord.shape[1], dtype=np.float64)
    cx = np.einsum("xyz,x->z", weights, xs)[present] / counts[present]
    cy = np.einsum("xyz,y->z", weights, ys)[present] / counts[present]
    z = np.arange(nz)
    return np.stack([np.interp(z, present, cx), np.interp(z, present, cy)], axis=1)


SAGITTAL_GAP_PX = 4


def sagittal_mosaic(
    image: np.ndarray, spacing: Sequence[float], centre_xy: np.ndarray, *,
    lesion: np.ndarray | None = None, cord: np.ndarray | None = None,
    offsets_mm: Sequence[float] = (-2.0, 0.0, 2.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Background (grayscale uint8) and overlay (RGBA uint8) of mid-cord sagittal panels.

    Each panel is a sagittal plane that follows the cord left-right: its row for slice z is taken
    at x = centre_xy[z, 0] + offset (mm converted to voxels, nearest voxel). Panels are resampled
    to TILE_MM_PER_PX (true aspect ratio) and shown as SCT shows sagittal QC: superior up,
    anterior on the left (patient facing left), posterior on the right.

    Args:
        image: (x, y, z) RPI volume (x toward left, y toward anterior, z toward superior).
        spacing: voxel size in mm along (x, y, z).
        centre_xy: (z, 2) cord centre per slice in voxel coordinates.
        lesion, cord: optional (x, y, z) masks drawn red and cyan.
        offsets_mm: lateral offsets of the panels from the cord centre, toward the patient's left
            (+) or right (-); panels are placed left to right in this order.
    Returns:
        (rows, cols) background and (rows, cols, 4) overlay; rows = superior-inferior extent,
        cols = panels of the anterior-posterior extent separated by SAGITTAL_GAP_PX black columns.
    """
    nx, ny, nz = image.shape
    rows = max(8, int(round(nz * spacing[2] / TILE_MM_PER_PX)))
    cols = max(8, int(round(ny * spacing[1] / TILE_MM_PER_PX)))
    width = len(offsets_mm) * cols + (len(offsets_mm) - 1) * SAGITTAL_GAP_PX
    background = np.zeros((rows, width), np.uint8)
    overlay = np.zeros((rows, width, 4), np.uint8)
    z = np.arange(nz)

    def plane(volume: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return volume[xs, :, z].T  # (y, z): row z of the plane at its own x

    def view(a: np.ndarray, order: int) -> np.ndarray:
        # (y, z) -> display (row 0 = superior, col 0 = anterior)
        return resample_to_shape(a[:, :, None].astype(np.float32), (cols, rows, 1), order=order)[:, :, 0].T[::-1, ::-1]

    planes_x = [np.clip(np.rint(centre_xy[:, 0] + off / spacing[0]).astype(int), 0, nx - 1) for off in offsets_mm]
    grey = [plane(image, xs) for xs in planes_x]
    lo, hi = np.percentile(np.concatenate([g.ravel() for g in grey]), (1, 99.5))
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    for k, xs in enumerate(planes_x):
        window = (slice(None), slice(k * (cols + SAGITTAL_GAP_PX), k * (cols + SAGITTAL_GAP_PX) + cols))
        background[window] = np.clip((view(grey[k], 1) - lo) * scale, 0, 255).astype(np.uint8)
        for mask, colour in ((cord, CORD_RGBA), (lesion, LESION_RGBA)):
            if mask is not None:
                overlay[window][view(plane(mask, xs), 0) > 0.5] = colour
    return background, overlay


BOX_RGBA = (255, 220, 0, 255)
ORTHO_GAP_PX = 4


def ortho_box(image: np.ndarray, spacing: Sequence[float], box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Background and overlay of a crop box (SCT 7's `sc_crop` QC entry, plane "Ortho"): three
    planes through the box's centre side by side — sagittal (superior up, anterior left), coronal
    (superior up, patient's right on the left), axial (anterior up, patient's right on the left) —
    each at TILE_MM_PER_PX, with the box's outline in yellow.

    Args:
        image: (x, y, z) RPI volume; spacing: its voxel size in mm.
        box: (x, y, z) RPI mask, > 0 inside the box.
    Returns:
        (rows, cols) background and (rows, cols, 4) overlay.
    """
    from scipy import ndimage

    inside = np.argwhere(box > 0)
    centre = np.rint((inside.min(axis=0) + inside.max(axis=0)) / 2).astype(int)
    cx, cy, cz = centre
    # (volume plane as a 2D array with its axes' spacings, and how it is shown)
    planes = [
        (lambda v: v[cx, :, :], (spacing[1], spacing[2]), lambda a: a.T[::-1, ::-1]),  # (y, z) -> rows S..I, cols A..P
        (lambda v: v[:, cy, :], (spacing[0], spacing[2]), lambda a: a.T[::-1, :]),  # (x, z) -> rows S..I, cols R..L
        (lambda v: v[:, :, cz], (spacing[0], spacing[1]), lambda a: a.T[::-1, :]),  # (x, y) -> rows A..P, cols R..L
    ]
    lo, hi = np.percentile(image, (1, 99.5))
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    panels = []
    for cut, (s0, s1), show in planes:
        grey, mask = cut(image).astype(np.float32), cut(box) > 0
        shape = (max(8, int(round(grey.shape[0] * s0 / TILE_MM_PER_PX))), max(8, int(round(grey.shape[1] * s1 / TILE_MM_PER_PX))))
        grey = resample_to_shape(grey[:, :, None], (*shape, 1), order=1)[:, :, 0]
        mask = resample_to_shape(mask[:, :, None].astype(np.float32), (*shape, 1), order=0)[:, :, 0] > 0.5
        edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
        panels.append((np.clip((show(grey) - lo) * scale, 0, 255).astype(np.uint8), show(edge)))
    rows = max(p[0].shape[0] for p in panels)
    width = sum(p[0].shape[1] for p in panels) + ORTHO_GAP_PX * (len(panels) - 1)
    background = np.zeros((rows, width), np.uint8)
    overlay = np.zeros((rows, width, 4), np.uint8)
    col = 0
    for grey, edge in panels:
        window = (slice(0, grey.shape[0]), slice(col, col + grey.shape[1]))
        background[window] = grey
        overlay[window][edge] = BOX_RGBA
        col += grey.shape[1] + ORTHO_GAP_PX
    return background, overlay
