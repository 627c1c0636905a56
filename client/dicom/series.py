"""One DICOM MR series → the (array, affine, spacing) every pipeline takes from a NIfTI file.

Accepted: single-frame MR Image Storage instances (a folder or a list of files) and one
multi-frame Enhanced MR / Legacy Converted Enhanced MR instance, uncompressed or compressed
(JPEG 2000, JPEG-LS, RLE, JPEG: pydicom's pixel handlers, pylibjpeg).

Geometry, as dcm2niix and nibabel read it:
- slices (frames) are sorted by their ImagePositionPatient projected on the slice normal
  (row direction x column direction of ImageOrientationPatient), never by file name or
  InstanceNumber;
- the array is (x, y, z) = (column, row, slice): `data[:, :, k]` is slice k transposed;
- the affine maps voxel indices to RAS+ mm (DICOM's patient space is LPS+; x and y are negated):
  column 0 = row direction · PixelSpacing[1], column 1 = column direction · PixelSpacing[0],
  column 2 = the step between consecutive sorted slice positions, column 3 = slice 0's position;
- voxel values are RescaleSlope · stored + RescaleIntercept, per slice.

Every problem that makes the volume untrustworthy is refused with one line naming the series
(or file) and what is wrong: not MR, no pixel data, mixed series, mixed orientations or sizes or
pixel spacings, duplicate positions, missing slices (non-uniform spacing), sheared stacks,
truncated or undecodable files, too few slices to segment.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lesionseg.core.errors import InputError
from lesionseg.core.wire import MAX_VOXELS

logger = logging.getLogger(__name__)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.4"
MR_STORAGE_CLASSES = (MR_IMAGE_STORAGE, ENHANCED_MR_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE)
MULTIFRAME_CLASSES = (ENHANCED_MR_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE)

#: fewest slices, rows and columns a series must have to be segmented (a localizer or a single
#: slice is not a volume; the networks' patches need some extent in every direction)
MIN_SLICES = 3
MIN_IN_PLANE = 16
#: slice steps may differ from their median by this fraction before the series is refused
#: (a missing slice doubles one step)
SPACING_TOLERANCE = 0.01
#: orientation cosines and pixel spacings (mm) of two slices are "the same" within this
GEOMETRY_TOLERANCE = 1e-4
#: the stack may drift off the slice normal by this fraction of a step before it counts as sheared
SHEAR_TOLERANCE = 0.01

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """A voxel -> LPS+ mm affine as voxel -> RAS+ mm (the same matrix with x and y negated)."""
    return LPS_TO_RAS @ affine_lps


@dataclasses.dataclass(frozen=True, kw_only=True)
class Frame:
    """One slice of the series: instance `index` in `DicomSeries.datasets`, its 0-based `frame`
    (0 for single-frame instances) and its geometry (LPS+ mm)."""

    index: int
    frame: int
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    spacing: tuple[float, float]  # PixelSpacing: (between rows, between columns) mm
    slope: float
    intercept: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class DicomSeries:
    """A read series: source instances (headers with pixel data), its slices sorted along the
    normal, and the volume.

    `data` is (x, y, z) = (column, row, sorted slice) float32 intensities (rescaled);
    `affine` maps voxel indices to RAS+ mm; `frames[k]` says where slice k came from;
    `files[i]` is the file of `datasets[i]`.
    """

    label: str  # what error messages call it: the folder or first file, and the series
    series_uid: str
    datasets: tuple
    files: tuple[Path, ...]
    frames: tuple[Frame, ...]
    data: np.ndarray
    affine: np.ndarray
    integer: bool  # every voxel value is an integer (no fractional rescale): write it as int16/uint16

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along x, y, z."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def multiframe(self) -> bool:
        """Whether the slices are the frames of one multi-frame instance."""
        return len(self.datasets) == 1 and len(self.frames) > 1

    @property
    def first(self):
        """The first source instance (patient, study, frame of reference)."""
        return self.datasets[self.frames[0].index]


def dicom_files(path: Path) -> list[Path]:
    """The files of a series folder (hidden files skipped, sorted for stable messages), or `[path]`."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return [p for p in files if p.name.upper() != "DICOMDIR"]
    return [path]


def looks_like_dicom(path: Path) -> bool:
    """Whether `path` starts like a DICOM Part 10 file (128-byte preamble + 'DICM') or ends in .dcm."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_input(path: Path) -> bool:
    """Whether a command-line input names a DICOM series: a .dcm / Part 10 file, or a folder whose
    first few files are DICOM and which holds no NIfTI image."""
    path = Path(path)
    if path.is_file():
        return looks_like_dicom(path)
    if not path.is_dir():
        return False
    checked = 0
    for file in sorted(path.rglob("*")):
        if not file.is_file() or file.name.startswith("."):
            continue
        if file.name.endswith((".nii", ".nii.gz")):
            return False
        if not looks_like_dicom(file):
            return False
        checked += 1
        if checked >= 3:
            break
    return checked > 0


def read_series(source: Path | str | Sequence[Path | str], *, label: str | None = None) -> DicomSeries:
    """Read one MR series from a folder, a file or a list of instance files.

    Raises:
        InputError: one line naming the series or file and the problem (see the module docstring).
    """
    paths = [Path(source)] if isinstance(source, (str, Path)) else [Path(p) for p in source]
    if len(paths) == 1 and not paths[0].exists():
        raise InputError(f"{paths[0]}: DICOM input does not exist")
    files = [f for p in paths for f in dicom_files(p)]
    where = label or (str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({len(files)} files)")
    if not files:
        raise InputError(f"{where}: no DICOM files")
    datasets = [_read_file(f) for f in files]
    series_uid = _one_series(datasets, files, where)
    _check_mr(datasets, files, where, series_uid)
    frames = _frames(datasets, files, where)
    text = f"{where}: series {series_uid}"
    frames = _sort_and_check(frames, files, text)
    rows, columns = _size(datasets, files, text)
    if len(frames) < MIN_SLICES or min(rows, columns) < MIN_IN_PLANE:
        raise InputError(f"{text} is too small to segment ({columns}x{rows} pixels, {len(frames)} slice"
                         f"{'s' if len(frames) != 1 else ''}; at least {MIN_IN_PLANE}x{MIN_IN_PLANE} and {MIN_SLICES} slices needed)")
    if rows * columns * len(frames) > MAX_VOXELS:
        raise InputError(f"{text} is too large ({columns}x{rows}x{len(frames)}, max {MAX_VOXELS} voxels)")
    data, integer = _pixels(datasets, files, frames, rows, columns, text)
    affine = lps_to_ras(_affine_lps(frames))
    return DicomSeries(label=where, series_uid=series_uid, datasets=tuple(datasets), files=tuple(files),
                       frames=tuple(frames), data=data, affine=affine, integer=integer)


def _read_file(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError:
        raise InputError(f"{path}: not a DICOM file") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise InputError(f"{path}: not a readable DICOM file ({_reason(exc)})") from None
    if "SOPClassUID" not in ds:
        raise InputError(f"{path}: not a DICOM image (no SOP Class UID; truncated?)")
    return ds


def _one_series(datasets, files: Sequence[Path], where: str) -> str:
    uids: dict[str, list[int]] = {}
    for i, ds in enumerate(datasets):
        uids.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(i)
    if len(uids) > 1:
        parts = [f"{uid or '(none)'} ({len(idx)} files, e.g. {files[idx[0]].name})" for uid, idx in uids.items()]
        raise InputError(f"{where}: holds {len(uids)} series ({'; '.join(parts[:3])}); give the files of one series")
    (uid,) = uids
    if not uid:
        raise InputError(f"{files[0]}: has no Series Instance UID")
    return uid


def _check_mr(datasets, files: Sequence[Path], where: str, series_uid: str) -> None:
    for ds, path in zip(datasets, files):
        modality = str(ds.get("Modality", "")).strip()
        if modality != "MR":
            raise InputError(f"{where}: series {series_uid} is modality {modality or 'unknown'}, not MR ({path.name})")
        if ds.SOPClassUID not in MR_STORAGE_CLASSES:
            name = getattr(ds.SOPClassUID, "name", str(ds.SOPClassUID))
            raise InputError(f"{path}: {name} is not an MR image storage class lesionseg reads "
                             "(MR Image Storage, Enhanced MR, Legacy Converted Enhanced MR)")
        if "PixelData" not in ds and "FloatPixelData" not in ds:
            raise InputError(f"{path}: has no pixel data")
        if int(ds.get("SamplesPerPixel", 1)) != 1 or not str(ds.get("PhotometricInterpretation", "MONOCHROME2")).startswith("MONOCHROME"):
            raise InputError(f"{path}: is a colour image ({ds.get('PhotometricInterpretation')}), not grey-scale MR")
    multiframe = [ds.SOPClassUID in MULTIFRAME_CLASSES for ds in datasets]
    if any(multiframe) and len(datasets) > 1:
        raise InputError(f"{where}: series {series_uid} has {len(datasets)} multi-frame instances; one volume per instance "
                         "is read (give one file)")


def _floats(value, count: int, what: str, path: Path) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count or not all(np.isfinite(numbers)):
        raise InputError(f"{path}: missing or malformed {what}")
    return numbers


def _frames(datasets, files: Sequence[Path], where: str) -> list[Frame]:
    frames: list[Frame] = []
    for index, (ds, path) in enumerate(zip(datasets, files)):
        if ds.SOPClassUID in MULTIFRAME_CLASSES:
            frames.extend(_multiframe_frames(ds, index, path))
            continue
        frames.append(Frame(
            index=index, frame=0,
            position=_floats(ds.get("ImagePositionPatient"), 3, "Image Position (Patient)", path),  # type: ignore[arg-type]
            orientation=_floats(ds.get("ImageOrientationPatient"), 6, "Image Orientation (Patient)", path),
            spacing=_floats(ds.get("PixelSpacing"), 2, "Pixel Spacing", path),  # type: ignore[arg-type]
            slope=float(ds.get("RescaleSlope", 1) or 1), intercept=float(ds.get("RescaleIntercept", 0) or 0)))
    return frames


def _group(ds, frame_groups, keyword: str):
    """The functional group `keyword` of one frame: per-frame first, else shared."""
    for groups in (frame_groups, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        sequence = groups.get(keyword) if groups is not None else None
        if sequence:
            return sequence[0]
    return None


def _multiframe_frames(ds, index: int, path: Path) -> list[Frame]:
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if per_frame is None or len(per_frame) != count:
        raise InputError(f"{path}: multi-frame image without a Per-frame Functional Groups Sequence for each of its {count} frames")
    frames = []
    for k, groups in enumerate(per_frame):
        position = _group(ds, groups, "PlanePositionSequence")
        orientation = _group(ds, groups, "PlaneOrientationSequence")
        measures = _group(ds, groups, "PixelMeasuresSequence")
        transform = _group(ds, groups, "PixelValueTransformationSequence")
        if position is None or orientation is None or measures is None:
            raise InputError(f"{path}: frame {k + 1} has no plane position, plane orientation or pixel measures")
        frames.append(Frame(
            index=index, frame=k,
            position=_floats(position.get("ImagePositionPatient"), 3, f"Image Position (Patient) of frame {k + 1}", path),  # type: ignore[arg-type]
            orientation=_floats(orientation.get("ImageOrientationPatient"), 6, f"Image Orientation (Patient) of frame {k + 1}", path),
            spacing=_floats(measures.get("PixelSpacing"), 2, f"Pixel Spacing of frame {k + 1}", path),  # type: ignore[arg-type]
            slope=float(transform.get("RescaleSlope", 1) or 1) if transform is not None else 1.0,
            intercept=float(transform.get("RescaleIntercept", 0) or 0) if transform is not None else 0.0))
    return frames


def _name(frame: Frame, files: Sequence[Path]) -> str:
    """How messages name a slice: its file, and its frame number in a multi-frame file."""
    name = files[frame.index].name
    return f"{name} frame {frame.frame + 1}" if len(files) == 1 else name


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """The unit slice normal (LPS+) of an ImageOrientationPatient: row direction x column direction."""
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, column)
    return normal / np.linalg.norm(normal)


def _sort_and_check(frames: list[Frame], files: Sequence[Path], text: str) -> list[Frame]:
    first = frames[0]
    for frame in frames[1:]:
        if not np.allclose(frame.orientation, first.orientation, atol=GEOMETRY_TOLERANCE):
            raise InputError(f"{text} mixes slice orientations ({_name(first, files)}: {_cosines(first)}, "
                             f"{_name(frame, files)}: {_cosines(frame)})")
        if not np.allclose(frame.spacing, first.spacing, atol=GEOMETRY_TOLERANCE):
            raise InputError(f"{text} has inconsistent pixel spacing ({_name(first, files)}: {_mm(first.spacing)}, "
                             f"{_name(frame, files)}: {_mm(frame.spacing)})")
    row, column = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
    if min(np.linalg.norm(row), np.linalg.norm(column)) < 0.99 or abs(float(row @ column)) > 1e-3:
        raise InputError(f"{text} has a malformed Image Orientation (Patient) {_cosines(first)} "
                         "(the row and column directions must be perpendicular unit vectors)")
    if min(first.spacing) <= 0:
        raise InputError(f"{text} has a zero or negative pixel spacing {_mm(first.spacing)}")
    normal = slice_normal(first.orientation)
    frames = sorted(frames, key=lambda f: float(np.dot(f.position, normal)))
    heights = np.array([np.dot(f.position, normal) for f in frames])
    steps = np.diff(heights)
    for k, step in enumerate(steps):
        if abs(step) < 1e-3:
            raise InputError(f"{text} has two slices at the same position ({heights[k]:.3f} mm along the normal: "
                             f"{_name(frames[k], files)} and {_name(frames[k + 1], files)}); one series per echo or time point")
    if len(steps):
        typical = float(np.median(steps))
        for k, step in enumerate(steps):
            if abs(step - typical) > SPACING_TOLERANCE * typical + 1e-3:
                missing = round(step / typical) - 1
                hint = f" ({missing} missing slice{'s' if missing != 1 else ''}?)" if missing >= 1 else ""
                raise InputError(f"{text} has non-uniform slice spacing: {step:.3f} mm between {_name(frames[k], files)} "
                                 f"and {_name(frames[k + 1], files)}, {typical:.3f} mm elsewhere{hint}")
        positions = np.array([f.position for f in frames])
        step_vector = (positions[-1] - positions[0]) / (len(frames) - 1)
        drift = np.linalg.norm(step_vector - np.dot(step_vector, normal) * normal)
        if drift > SHEAR_TOLERANCE * typical:
            raise InputError(f"{text} is a sheared stack (slice positions drift {drift:.3f} mm per slice off the normal, "
                             "as with gantry tilt); resample it first")
    return frames


def _cosines(frame: Frame) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in frame.orientation) + "]"


def _mm(values: Iterable[float]) -> str:
    return "x".join(f"{v:.4g}" for v in values) + " mm"


def _size(datasets, files: Sequence[Path], text: str) -> tuple[int, int]:
    sizes = {(int(ds.Rows), int(ds.Columns)): path for ds, path in zip(datasets, files)}
    if len(sizes) > 1:
        (a, pa), (b, pb) = list(sizes.items())[:2]
        raise InputError(f"{text} mixes image sizes ({pa.name}: {a[1]}x{a[0]}, {pb.name}: {b[1]}x{b[0]} pixels)")
    return next(iter(sizes))


def _pixels(datasets, files: Sequence[Path], frames: Sequence[Frame], rows: int, columns: int, text: str) -> tuple[np.ndarray, bool]:
    decoded: dict[int, np.ndarray] = {}
    data = np.empty((columns, rows, len(frames)), np.float32)
    integer = True
    for k, frame in enumerate(frames):
        if frame.index not in decoded:
            decoded[frame.index] = _decode(datasets[frame.index], files[frame.index])
        pixels = decoded[frame.index]
        plane = pixels[frame.frame] if pixels.ndim == 3 else pixels
        if plane.shape != (rows, columns):
            raise InputError(f"{files[frame.index]}: pixel data has shape {plane.shape}, header says {rows}x{columns}")
        values = plane.astype(np.float64) * frame.slope + frame.intercept
        integer = integer and plane.dtype.kind in "iu" and float(frame.slope).is_integer() and float(frame.intercept).is_integer()
        data[:, :, k] = values.T
    if not np.all(np.isfinite(data)):
        raise InputError(f"{text} has NaN or infinite voxel values")
    return data, integer


def _decode(ds, path: Path) -> np.ndarray:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        return np.asarray(ds.pixel_array)
    except NotImplementedError as exc:
        name = getattr(syntax, "name", str(syntax))
        raise InputError(f"{path}: transfer syntax {name} ({syntax}) cannot be decoded here ({_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - short pixel data, broken codestreams
        raise InputError(f"{path}: pixel data is truncated or corrupt ({_reason(exc)})") from None


def _affine_lps(frames: Sequence[Frame]) -> np.ndarray:
    first = frames[0]
    row, column = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
    affine = np.eye(4)
    affine[:3, 0] = row * first.spacing[1]
    affine[:3, 1] = column * first.spacing[0]
    origin = np.asarray(first.position)
    affine[:3, 2] = (np.asarray(frames[-1].position) - origin) / (len(frames) - 1)
    affine[:3, 3] = origin
    return affine


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def series_image(series: DicomSeries, path: Path | None = None):
    """The series as the `lesionseg.core.image.Image` the pipelines take from a NIfTI file: float32
    (x, y, z) data, the RAS+ affine and a NIfTI header (scanner qform/sform, mm) whose zooms are the
    voxel size, named `path` (default: the series' folder or file) in messages and output names,
    carrying the series."""
    from lesionseg.core.nibabel_import import nibabel as nib

    from lesionseg.core.image import Image

    image = nib.Nifti1Image(series.data, series.affine)
    image.set_qform(series.affine, code=1)
    image.set_sform(series.affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    where = path if path is not None else (series.files[0].parent if len(series.files) > 1 else series.files[0])
    return Image(path=Path(where), data=series.data, affine=series.affine, header=image.header, series=series)
