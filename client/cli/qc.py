"""`lesionseg qc`: a QC report entry for masks that already exist (SCT's `sct_qc -i -s`), with lesion
statistics.

The image may be in any orientation: image and masks are reoriented to SCT's RPI (x toward the
patient's left, y toward anterior, z toward superior) exactly as `deepseg-lesion -qc` does, and
drawn by the same mosaic code (`lesionseg.client.qc.report`). Lesion statistics are computed on the
lesion mask's own grid and axes (see `lesionseg.client.lesion_stats`); the entry's JSON holds them
under "lesions" and its folder holds them as `<lesion stem>_lesions.tsv` / `.json`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from lesionseg.core.errors import EXIT_OK, InputError, UsageError
from lesionseg.client.nifti import Volume

logger = logging.getLogger(__name__)

PLANES = ("axial", "sagittal")

HELP = """\
examples:
  lesionseg qc -i t2.nii.gz -s t2_seg.nii.gz -qc qc/                     # cord only, axial mosaic
  lesionseg qc -i sub-01_T2w.nii.gz -s sub-01_T2w_seg.nii.gz -l sub-01_T2w_lesion.nii.gz -qc qc/
  lesionseg qc -i t2.nii.gz -s t2_seg.nii.gz -l t2_lesion.nii.gz -qc qc/ -p sagittal --subject sub-02
  # then open qc/index.html (offline; arrows or j/k move, t toggles the overlay, f/x/a mark)

The masks must be on the image's grid (same shape and affine). Cord in cyan, lesions in red.
axial: one tile per slice where the cord or a lesion is, cropped around the cord (radiological
view: patient's right on the left, anterior up). sagittal: three planes following the cord centre
at -2, 0 and +2 mm toward the patient's left, superior up, anterior on the left (as SCT).
With -l, lesion statistics (26-connected lesions, volumes in mm3) go into the entry and its
folder (<lesion>_lesions.tsv/.json) and are shown on index.html.
exit codes: 0 ok, 1 bad input file, 2 usage
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "qc", help="QC report entry for existing cord/lesion masks, with lesion statistics (sct_qc)",
        epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-i", "--input", required=True, type=Path, metavar="IMG", help="image (NIfTI, any orientation)")
    parser.add_argument("-s", "--seg", required=True, type=Path, metavar="SEG", help="spinal cord mask on the image's grid (cyan)")
    parser.add_argument("-l", "--lesion", type=Path, metavar="LESION", help="lesion mask on the image's grid (red); values > 0 are lesion (soft masks in [0, 1]: >= 0.5)")
    parser.add_argument("-qc", "--qc", required=True, type=Path, metavar="DIR", help="QC folder (SCT layout, index.html)")
    parser.add_argument("-p", "--plane", choices=PLANES, default="axial", help="view (default axial)")
    parser.add_argument("-c", "--contrast", metavar="NAME", help="contrast folder of the entry (default: the image's file stem)")
    parser.add_argument("--dataset", metavar="NAME", help="dataset of the entry (default: guessed from the image path, as SCT)")
    parser.add_argument("--subject", metavar="NAME", help="subject of the entry (default: guessed from the image path, as SCT)")
    parser.set_defaults(run=run)


def _folder_name(value: str | None, option: str) -> str | None:
    """A user-given entry name is one folder of the QC layout: no separator, not . or .."""
    if value is not None and (not value or "/" in value or "\\" in value or value in (".", "..")):
        raise UsageError(f"{option} {value!r} must be a plain folder name")
    return value


def run(args: argparse.Namespace) -> int:
    for value, option in ((args.contrast, "-c"), (args.dataset, "--dataset"), (args.subject, "--subject")):
        _folder_name(value, option)
    folder = write_mask_qc(
        args.input, args.seg, args.qc, lesion_path=args.lesion, plane=args.plane,
        contrast=args.contrast, dataset=args.dataset, subject=args.subject,
    )
    print(folder)
    print(args.qc / "index.html")
    return EXIT_OK


def _load_on_grid(path: Path, image: Volume, *, what: str, allow_empty: bool) -> Volume:
    """Load a mask and check it lies on the image's voxel grid (shape and affine, 1e-3 mm)."""
    from lesionseg.client.nifti import load_volume

    mask = load_volume(path, what=what, allow_empty=allow_empty)
    if mask.data.shape != image.data.shape:
        raise InputError(f"{path}: {what} shape {mask.data.shape} differs from the image's {image.data.shape} ({image.path})")
    if not np.allclose(mask.affine, image.affine, atol=1e-3):
        raise InputError(f"{path}: {what} affine differs from the image's ({image.path}): not on the same grid")
    return mask


def _slices_to_show(*masks: np.ndarray) -> slice:
    """The z range (RPI) holding any voxel of the (x, y, z) masks."""
    present = np.flatnonzero(np.any(np.stack([m > 0 for m in masks]), axis=(0, 1, 2)))
    return slice(int(present[0]), int(present[-1]) + 1)


def _rpi_views(image: Volume, seg: Volume | None, lesion: Volume | None, plane: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Background and overlay of `plane` from the RPI-reoriented image and masks, and what the
    entry's JSON should say about them ("slices_rpi": the axial tiles' z range [start, stop)).
    Without a cord mask (lesion-only tasks) the tiles are centred on the field of view."""
    from lesionseg.client.lesion_stats import lesion_voxels
    from lesionseg.client.orientation import reorientation, sct_to_nib
    from lesionseg.client.qc.report import axial_mosaic, cord_centres, sagittal_mosaic

    orient = reorientation(image.affine, image.data.shape, sct_to_nib("RPI"))
    data = orient.forward(image.data)
    spacing = orient.forward_spacing(image.spacing)
    cord = orient.forward((seg.data > 0).astype(np.uint8)) if seg is not None else None
    lesions = orient.forward(lesion_voxels(lesion)) if lesion is not None else None
    if cord is not None:
        if not cord.any():
            raise InputError(f"{seg.path}: cord mask has no voxel > 0")
        centres = cord_centres(cord)
    else:
        centres = np.tile([(data.shape[0] - 1) / 2, (data.shape[1] - 1) / 2], (data.shape[2], 1))
    if plane == "sagittal":
        return (*sagittal_mosaic(data, spacing, centres, lesion=lesions, cord=cord), {})
    present = [m for m in (cord, lesions) if m is not None and m.any()]
    shown = _slices_to_show(*present) if present else slice(0, data.shape[2])
    background, overlay = axial_mosaic(data[:, :, shown], spacing, centres[shown],
                                       cord=cord[:, :, shown] if cord is not None else None,
                                       lesion=lesions[:, :, shown] if lesions is not None else None)
    return background, overlay, {"slices_rpi": [shown.start, shown.stop]}


def _lesion_record(lesion: Volume) -> tuple[dict, dict[str, str]]:
    """The entry's "fname_lesion" and "lesions" keys, and the sidecar attachments, of a lesion mask."""
    from lesionseg.client.lesion_stats import json_text, mask_stats, sidecar_paths, stats_record, tsv_text

    stats = mask_stats(lesion)
    logger.info("%s: %d lesions, %.1f mm3", lesion.path, stats.count, stats.total_volume_mm3)
    tsv, js = sidecar_paths(lesion.path)
    record = {"fname_lesion": str(Path(lesion.path).resolve()), "lesions": stats_record(stats, mask_path=lesion.path)}
    return record, {tsv.name: tsv_text(stats), js.name: json_text(stats, mask_path=lesion.path)}


def write_mask_qc(
    image_path: Path, seg_path: Path | None, qc_dir: Path, *, lesion_path: Path | None = None, plane: str = "axial",
    contrast: str | None = None, dataset: str | None = None, subject: str | None = None, command: str = "qc",
) -> Path:
    """Write one QC entry (images, JSON, lesion sidecars) for existing masks; returns its folder.

    Raises:
        InputError: a file is missing or unreadable, the cord mask is empty, or a mask is not on
            the image's grid.
    """
    from lesionseg.client.nifti import load_volume, stem
    from lesionseg.client.qc.report import QcEntry, write_entry

    if plane not in PLANES:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    image = load_volume(image_path)
    seg = _load_on_grid(seg_path, image, what="cord mask", allow_empty=False) if seg_path is not None else None
    lesion = _load_on_grid(lesion_path, image, what="lesion mask", allow_empty=True) if lesion_path else None
    background, overlay, extra = _rpi_views(image, seg, lesion, plane)
    attachments: dict[str, str] = {}
    if lesion is not None:
        lesion_extra, attachments = _lesion_record(lesion)
        extra.update(lesion_extra)
    entry = QcEntry(
        command=command, contrast=contrast or stem(image_path), fname_in=image_path, fname_seg=seg_path or lesion_path,
        plane=plane.capitalize(), extra=extra, dataset=dataset, subject=subject, attachments=attachments,
    )
    return write_entry(qc_dir, entry, background, overlay)
