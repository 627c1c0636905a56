"""`lesionseg dicom2nifti`: one DICOM MR series as a NIfTI file, on the grid the pipelines see,
with a JSON sidecar naming the series (like dcm2niix's BIDS sidecar, fewer fields)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lesionseg.client.dicom.series import DicomSeries, read_series, series_image
from lesionseg.core.nifti import refuse_existing, save_nifti, stem
from lesionseg.core.files import atomic_write_text


def default_output(source: Path) -> Path:
    """`<folder>.nii.gz` beside a series folder, `<file stem>.nii.gz` beside a file."""
    source = Path(source)
    return source.parent / f"{stem(source) if source.is_file() else source.name}.nii.gz"


def sidecar_record(series: DicomSeries) -> dict:
    ds = series.first
    record = {
        "Modality": str(ds.get("Modality", "")),
        "SeriesDescription": str(ds.get("SeriesDescription", "")),
        "ProtocolName": str(ds.get("ProtocolName", "")),
        "SeriesNumber": int(ds.get("SeriesNumber", 0) or 0),
        "SeriesInstanceUID": series.series_uid,
        "StudyInstanceUID": str(ds.get("StudyInstanceUID", "")),
        "FrameOfReferenceUID": str(ds.get("FrameOfReferenceUID", "")),
        "ImageType": list(ds.get("ImageType", [])),
        "SliceThickness": float(ds.get("SliceThickness", 0) or 0) or None,
        "Sources": [str(p.resolve()) for p in series.files],
        "ConversionSoftware": "lesionseg dicom2nifti",
    }
    return {key: value for key, value in record.items() if value not in ("", None, [])}


def dicom_to_nifti(source: Path, output: Path | None = None, *, overwrite: bool = False) -> Path:
    """Convert the series at `source` (folder or file) to `output` (default: `default_output`).

    Integer series are written as int16 / uint16 (whichever holds every value), others as float32.

    Raises:
        InputError: the series cannot be read (see `read_series`); OutputExistsError.
    """
    output = Path(output) if output is not None else default_output(source)
    sidecar = output.with_name(stem(output) + ".json")
    refuse_existing([output, sidecar], overwrite=overwrite)
    series = read_series(source)
    data = series.data
    if series.integer:
        lo, hi = float(data.min()), float(data.max())
        if lo >= -32768 and hi <= 32767:
            data = data.astype(np.int16)
        elif lo >= 0 and hi <= 65535:
            data = data.astype(np.uint16)
    volume = series_image(series)
    save_nifti(data, series.affine, output, like=volume.header)
    atomic_write_text(sidecar, json.dumps(sidecar_record(series), indent=2) + "\n")
    return output
