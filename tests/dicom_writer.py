"""Test support: a 3D volume written as a DICOM MR series, the fixtures of the DICOM tests and
benchmarks, from real NIfTI images (`lesionseg.client.dicom.series` reads it back; bench/ puts
tests/ on its path).

The geometry is the inverse of `series.read_series`: with LPS = diag(-1, -1, 1) · RAS affine,
slice k's pixels are `data[:, :, k].T`, ImageOrientationPatient is the unit LPS columns 0 and 1,
ImagePositionPatient is LPS · (0, 0, k, 1) and PixelSpacing is [|column 1|, |column 0|].
Integer volumes are stored as they are (int16/uint16); others as uint16 with one RescaleSlope /
RescaleIntercept for the series. UIDs are derived from `seed`, so the same call writes the same
files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from lesionseg.client.dicom.series import MR_IMAGE_STORAGE
from lesionseg.client.dicom.uids import derived_uid
from lesionseg.core.files import atomic_path

#: the date written series carry (fixed, so the same call writes the same files)
FIXTURE_DATE = "20260101"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeriesSpec:
    """What a written series says about itself: patient, study and series identity, description,
    and how it is encoded (`compression`: None, 'jpeg2000', 'jpegls' or 'rle'; `multiframe`:
    one Legacy Converted Enhanced MR instance instead of one file per slice)."""

    seed: str
    patient_id: str = "LESIONSEG-TEST"
    patient_name: str = "Test^Patient"
    description: str = "T2w"
    protocol: str = ""
    series_number: int = 1
    study_uid: str | None = None
    frame_of_reference_uid: str | None = None
    modality: str = "MR"
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "OTHER")
    compression: str | None = None
    multiframe: bool = False


def uid(seed: str, *parts: str) -> str:
    """A UID derived from `seed` and `parts` (the same inputs give the same UID)."""
    return derived_uid("lesionseg test series", seed, *parts)


def _stored(data: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(stored pixels, slope, intercept) of an (x, y, z) volume."""
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if np.all(np.equal(np.mod(data, 1), 0)):
        if lo >= 0 and hi <= 65535:
            return data.astype(np.uint16), 1.0, 0.0
        if lo >= -32768 and hi <= 32767:
            return data.astype(np.int16), 1.0, 0.0
    slope = (hi - lo) / 65535 if hi > lo else 1.0
    return np.rint((data - lo) / slope).astype(np.uint16), slope, lo


def write_series(data: np.ndarray, affine: np.ndarray, folder: Path, spec: SeriesSpec) -> list[Path]:
    """Write `data` ((x, y, z) intensities) with `affine` (voxel -> RAS+ mm) as a series in `folder`.

    Returns the written files (slice order, or the one multi-frame file).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, float)
    col0, col1 = lps[:3, 0], lps[:3, 1]
    orientation = [*(col0 / np.linalg.norm(col0)), *(col1 / np.linalg.norm(col1))]
    spacing = [float(np.linalg.norm(col1)), float(np.linalg.norm(col0))]
    thickness = float(np.linalg.norm(lps[:3, 2]))
    stored, slope, intercept = _stored(np.asarray(data, np.float64))
    study = spec.study_uid or uid(spec.seed, "study")
    series = uid(spec.seed, "series")
    frame_of_reference = spec.frame_of_reference_uid or uid(spec.seed, "frame of reference")
    datasets = []
    for k in range(stored.shape[2]):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        ds.file_meta.MediaStorageSOPInstanceUID = uid(spec.seed, "instance", str(k))
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = list(spec.image_type)
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = FIXTURE_DATE
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = spec.modality
        ds.Manufacturer = "lesionseg test fixture"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "spinal cord MR"
        ds.SeriesDescription = spec.description
        ds.PatientName = spec.patient_name
        ds.PatientID = spec.patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = f"{thickness:.6g}"
        ds.SpacingBetweenSlices = f"{thickness:.6g}"
        ds.EchoTrainLength = 1
        ds.RepetitionTime = "3000"
        ds.EchoTime = "90"
        ds.Laterality = ""
        ds.ProtocolName = spec.protocol or spec.description
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = "1"
        ds.SeriesNumber = spec.series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{float(np.dot((lps @ np.array([0.0, 0.0, k, 1.0]))[:3], np.cross(orientation[:3], orientation[3:]))):.6f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[0])
        ds.PixelSpacing = [f"{v:.8g}" for v in spacing]
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
        ds.RescaleIntercept = f"{intercept:.10g}"
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleType = "US"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        datasets.append(ds)
    if spec.multiframe:
        datasets = [_multiframe(datasets, spec)]
    written = []
    for k, ds in enumerate(datasets):
        if spec.compression is not None:
            _compress(ds, spec.compression)
        path = folder / (f"{spec.seed}_{k + 1:04d}.dcm" if not spec.multiframe else f"{spec.seed}_multiframe.dcm")
        with atomic_path(path) as tmp:
            ds.save_as(str(tmp), enforce_file_format=True)
        written.append(path)
    return written


def _multiframe(datasets: list, spec: SeriesSpec):
    """One Legacy Converted Enhanced MR instance of the single-frame `datasets` (highdicom's converter)."""
    from highdicom.legacy import LegacyConvertedEnhancedMRImage

    converted = LegacyConvertedEnhancedMRImage(
        legacy_datasets=datasets, series_instance_uid=uid(spec.seed, "multiframe series"), series_number=spec.series_number,
        sop_instance_uid=uid(spec.seed, "multiframe"), instance_number=1)
    return converted


_SYNTAXES = {"jpeg2000": "1.2.840.10008.1.2.4.90", "jpegls": "1.2.840.10008.1.2.4.80", "rle": "1.2.840.10008.1.2.5"}


def _compress(ds, compression: str) -> None:
    from pydicom.uid import UID

    if compression not in _SYNTAXES:
        raise ValueError(f"compression must be one of {sorted(_SYNTAXES)}, got {compression!r}")
    ds.compress(UID(_SYNTAXES[compression]))
