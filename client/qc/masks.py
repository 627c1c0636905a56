"""One QC entry for an image and its masks — the one way every command makes QC.

`qc_images` takes a loaded image and masks on its grid (the writer of a segmentation's results,
`lesionseg.client.writer`, with the statistics already computed); `write_mask_qc` takes files
(`lesionseg qc`). The image may be in any orientation: image and masks are reoriented to SCT's
RPI (x toward the patient's left, y toward anterior, z toward superior) and drawn by
`lesionseg.client.qc.mosaic`. The entry's JSON holds the lesion statistics under "lesions" and
its folder holds them as `<lesion stem>_lesions.tsv` / `.json`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from lesionseg.client.lesion_stats import LesionStats
from lesionseg.core.enums import Plane
from lesionseg.core.image import Image
from lesionseg.core.nifti import load_nifti, stem
from lesionseg.core.errors import InputError

logger = logging.getLogger(__name__)

PLANES = (Plane.AXIAL, Plane.SAGITTAL)


def load_on_grid(path: Path, image: Image, *, what: str, allow_empty: bool) -> Image:
    """Load a mask and check it lies on the image's voxel grid (shape and affine, 1e-3 mm).

    Raises:
        InputError: the mask is unreadable, or its shape or affine differs from the image's.
    """
    mask = load_nifti(path, what=what, allow_empty=allow_empty)
    if mask.data.shape != image.data.shape:
        raise InputError(f"{path}: {what} shape {mask.data.shape} differs from the image's {image.data.shape} ({image.path})")
    if not np.allclose(mask.affine, image.affine, atol=1e-3):
        raise InputError(f"{path}: {what} affine differs from the image's ({image.path}): not on the same grid")
    return mask


def _slices_to_show(*masks: np.ndarray) -> slice:
    """The z range (RPI) holding any voxel of the (x, y, z) masks."""
    present = np.flatnonzero(np.any(np.stack([m > 0 for m in masks]), axis=(0, 1, 2)))
    return slice(int(present[0]), int(present[-1]) + 1)


def rpi_views(image: Image, cord: np.ndarray | None, lesion: np.ndarray | None, plane: str, cord_source: Path | str
              ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Background and overlay of `plane` from the RPI-reoriented image and masks (`cord` > 0;
    `lesion`: lesion voxels, 0/1), and what the entry's JSON should say about them ("slices_rpi":
    the axial tiles' z range [start, stop)). Without a cord mask (lesion-only tasks) the tiles are
    centred on the field of view."""
    from lesionseg.client.qc.mosaic import axial_mosaic, cord_centres, sagittal_mosaic
    from lesionseg.core.orientation import reorientation, sct_to_nib

    orient = reorientation(image.affine, image.data.shape, sct_to_nib("RPI"))
    data = orient.forward(image.data)
    spacing = orient.forward_spacing(image.spacing)
    cord = orient.forward((cord > 0).astype(np.uint8)) if cord is not None else None
    lesions = orient.forward(lesion) if lesion is not None else None
    if cord is not None:
        if not cord.any():
            raise InputError(f"{cord_source}: cord mask has no voxel > 0")
        centres = cord_centres(cord)
    else:
        centres = np.tile([(data.shape[0] - 1) / 2, (data.shape[1] - 1) / 2], (data.shape[2], 1))
    if plane == Plane.SAGITTAL:
        return (*sagittal_mosaic(data, spacing, centres, lesion=lesions, cord=cord), {})
    present = [m for m in (cord, lesions) if m is not None and m.any()]
    shown = _slices_to_show(*present) if present else slice(0, data.shape[2])
    background, overlay = axial_mosaic(data[:, :, shown], spacing, centres[shown],
                                       cord=cord[:, :, shown] if cord is not None else None,
                                       lesion=lesions[:, :, shown] if lesions is not None else None)
    return background, overlay, {"slices_rpi": [shown.start, shown.stop]}


def _lesion_record(stats: LesionStats, path: Path) -> tuple[dict, dict[str, str]]:
    """The entry's "fname_lesion" and "lesions" keys, and the sidecar attachments, of a lesion mask
    file `path` with statistics `stats`."""
    from lesionseg.client.lesion_stats import json_text, sidecar_paths, stats_record, tsv_text

    logger.info("%s: %d lesions, %.1f mm3", path, stats.count, stats.total_volume_mm3)
    tsv, js = sidecar_paths(path)
    record = {"fname_lesion": str(Path(path).resolve()), "lesions": stats_record(stats, mask_path=path)}
    return record, {tsv.name: tsv_text(stats), js.name: json_text(stats, mask_path=path)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LesionLayer:
    """The lesions QC shows: their voxels (uint8 0/1 on the image's grid), statistics, and the
    mask file that holds them (named in the entry)."""

    voxels: np.ndarray
    stats: LesionStats
    path: Path


def qc_images(image: Image, *, cord: np.ndarray | None = None, cord_source: Path | str = "cord",
              lesion: LesionLayer | None = None, fname_seg: Path | None = None, plane: str = Plane.AXIAL, command: str = "qc",
              contrast: str | None = None, dataset: str | None = None, subject: str | None = None):
    """One QC entry of `image` and masks on its grid, computed but not written: (entry, background,
    overlay) for `lesionseg.client.qc.report.write_entry`.

    Args:
        cord: (x, y, z) cord mask or centerline (> 0) on the image's grid and axes, drawn cyan;
            the tiles follow its centre. `cord_source` names it in errors.
        lesion: the lesions, drawn red, with their statistics.
        fname_seg: the entry's "fname_seg" (default: the lesion mask's file).
        contrast: the entry's contrast folder (default: the image's file stem).
    Raises:
        InputError: the cord mask is empty.
    """
    from lesionseg.client.qc.report import QcEntry

    if plane not in PLANES:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    background, overlay, extra = rpi_views(image, cord, lesion.voxels if lesion is not None else None, plane, cord_source)
    attachments: dict[str, str] = {}
    if lesion is not None:
        lesion_extra, attachments = _lesion_record(lesion.stats, lesion.path)
        extra.update(lesion_extra)
    entry = QcEntry(
        command=command, contrast=contrast or stem(image.path), fname_in=image.path,
        fname_seg=fname_seg or (lesion.path if lesion is not None else None), plane=plane.capitalize(), extra=extra,
        dataset=dataset, subject=subject, attachments=attachments,
    )
    return entry, background, overlay


def cropbox_qc(image: Image, box: np.ndarray, *, fname_box: Path, contrast: str | None = None, dataset: str | None = None,
               subject: str | None = None):
    """SCT 7's QC entry of sc-crop's box (`qc2.sct_deepseg_cropbox`: command `sc_crop`, plane
    Ortho, the command line that shows the box with sc-crop): three planes through the box's
    centre with its outline; `box` (x, y, z) > 0 inside, on the image's grid. Returns (entry,
    background, overlay) for `write_entry`."""
    from lesionseg.client.qc.mosaic import ortho_box
    from lesionseg.client.qc.report import QcEntry
    from lesionseg.core.orientation import reorientation, sct_to_nib

    orient = reorientation(image.affine, image.data.shape, sct_to_nib("RPI"))
    background, overlay = ortho_box(orient.forward(image.data), orient.forward_spacing(image.spacing), orient.forward(box))
    entry = QcEntry(command="sc_crop", contrast=contrast or stem(image.path), fname_in=image.path, fname_seg=fname_box, plane="Ortho",
                    dataset=dataset, subject=subject, cmdline=f"sc_crop -i {image.path} --bbox {fname_box}")
    return entry, background, overlay


def write_mask_qc(
    image_path: Path, seg_path: Path | None, qc_dir: Path, *, lesion_path: Path | None = None, plane: str = Plane.AXIAL,
    contrast: str | None = None, dataset: str | None = None, subject: str | None = None, command: str = "qc",
) -> Path:
    """A QC entry for files: an image, its cord mask (`seg_path`) and/or lesion mask; returns the entry's folder.

    Raises:
        InputError: a file is missing or unreadable, the cord mask is empty, or a mask is not on
            the image's grid.
    """
    from lesionseg.client.lesion_stats import file_mask, image_stats, lesion_voxels
    from lesionseg.client.qc.report import write_entry

    image = load_nifti(image_path)
    seg = load_on_grid(seg_path, image, what="cord mask", allow_empty=False) if seg_path is not None else None
    lesion = None
    if lesion_path:
        loaded = load_on_grid(lesion_path, image, what="lesion mask", allow_empty=True)
        mask = file_mask(loaded)  # statistics in the mask file's own voxel size, as its sidecars have them
        lesion = LesionLayer(voxels=lesion_voxels(mask), stats=image_stats(mask, loaded), path=Path(lesion_path))
    entry, background, overlay = qc_images(
        image, cord=seg.data if seg is not None else None, cord_source=seg_path or "cord", lesion=lesion, fname_seg=seg_path,
        plane=plane, command=command, contrast=contrast, dataset=dataset, subject=subject)
    return write_entry(qc_dir, entry, background, overlay)
