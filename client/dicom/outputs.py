"""Writing one series' results as DICOM files: `<stem>_<model>_seg.dcm` (DICOM SEG) and
`<stem>_<model>_sr.dcm` (TID 1500 SR), next to the NIfTI outputs or in -ofolder, each atomically,
both computed before either is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lesionseg.client.dicom import results
from lesionseg.client.dicom.series import DicomSeries
from lesionseg.client.lesion_stats import LesionStats, voxel_volume_mm3
from lesionseg.core.nifti import stem
from lesionseg.core.errors import UsageError

OUTPUT_FORMATS = ("nifti", "dicom", "both")


def check_format(output_format: str, *, dicom_qc: bool = False) -> str:
    """`output_format` if known (and `dicom_qc`, the QC capture, only with DICOM output).

    Raises:
        UsageError: naming the known formats.
    """
    if output_format not in OUTPUT_FORMATS:
        raise UsageError(f"--output-format {output_format!r}: choose one of {', '.join(OUTPUT_FORMATS)}")
    if dicom_qc and not writes_dicom(output_format):
        raise UsageError("--dicom-qc goes with --output-format dicom or both")
    return output_format


def writes_nifti(output_format: str) -> bool:
    return output_format in ("nifti", "both")


def writes_dicom(output_format: str) -> bool:
    return output_format in ("dicom", "both")


def require_series(loaded, output_format: str) -> None:
    """DICOM results need a DICOM input (`loaded`: a `lesionseg.core.image.Image`).

    Raises:
        UsageError: DICOM output asked of a NIfTI input.
    """
    if writes_dicom(output_format) and loaded.series is None:
        raise UsageError(f"{loaded.path}: --output-format {output_format} writes DICOM results of a DICOM series; "
                         "this input is NIfTI")


def dicom_paths(image_path: Path, model: str, folder: Path, *, qc: bool = False) -> dict[str, Path]:
    """The SEG and SR (and with `qc` the QC capture) file names of `image_path`'s results from
    `model`, in `folder`."""
    name = stem(Path(image_path))
    paths = {"seg": folder / f"{name}_{model}_seg.dcm", "sr": folder / f"{name}_{model}_sr.dcm"}
    if qc:
        paths["qc"] = folder / f"{name}_{model}_qc.dcm"
    return paths


def write_dicom(series: DicomSeries, paths: dict[str, Path], algorithm: results.Algorithm, *,
                lesion: np.ndarray | None, stats: LesionStats | None, cord: np.ndarray | None = None,
                image=None) -> dict[str, Path]:
    """Write the SEG (lesion and/or cord segments), the SR (lesion statistics `stats` of `lesion`,
    cord volume) and, when `paths` has "qc", a Secondary Capture of the QC mosaic of `image` (the
    series' `Image`) of `series`; masks are (x, y, z) on the series grid, > 0 inside."""
    masks = {}
    if lesion is not None:
        masks[results.LESION] = (lesion > 0).astype(np.uint8)
    if cord is not None:
        masks[results.CORD] = (cord > 0).astype(np.uint8)
    seg = results.segmentation(series, masks, algorithm)
    cord_volume = float((cord > 0).sum()) * voxel_volume_mm3(series.spacing) if cord is not None else None
    sr = results.report(series, seg, stats if lesion is not None else None, algorithm, cord_volume_mm3=cord_volume)
    capture = results.qc_capture(series, image, algorithm, lesion=lesion, cord=cord) if "qc" in paths else None
    results.save(seg, paths["seg"])
    results.save(sr, paths["sr"])
    if capture is not None:
        results.save(capture, paths["qc"])
    return dict(paths)
