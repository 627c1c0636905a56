"""NIfTI input and output: strict validation with one-line errors, atomic writes.

A loaded file is an `lesionseg.core.image.Image`: its 3D array in the file's own axis order, the
affine (voxel -> RAS+ mm) and the header, whose zooms are the voxel size in mm.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import numpy as np

from lesionseg.core.errors import InputError, OutputExistsError
from lesionseg.core.files import atomic_path
from lesionseg.core.image import Image
from lesionseg.core.wire import MAX_VOXELS

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def stem(path: Path) -> str:
    """File name without .nii / .nii.gz: sub-01_T2w.nii.gz -> sub-01_T2w."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def load_nifti(path: str | Path, *, what: str = "image", allow_empty: bool = False, dtype=np.float32) -> Image:
    """Load and check a 3D NIfTI volume.

    Raises:
        InputError: missing, not NIfTI, truncated or corrupt header or data, not 3D, complex or
            colour (RGB) voxels, NaN/inf or values beyond `dtype`'s range, all zero (unless
            `allow_empty`), zero or non-finite spacing, a sheared voxel grid, too large, voxel
            sizes in metres or micrometres (`OTHER_UNITS`).
    """
    from lesionseg.core.nibabel_import import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} file does not exist")
    if path.is_dir():
        raise InputError(f"{path}: {what} is a directory, not a NIfTI file")
    with _quiet_nibabel():
        try:
            image = nib.load(str(path))
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types (ImageFileError, HeaderDataError, MGHError, ...)
            raise InputError(f"{path}: not a readable NIfTI {what} ({_load_reason(path, exc)})") from None
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{path}: {what} is {type(image).__name__}, not NIfTI")
        raw_header = _raw_header(path, type(image.header))
        expected = type(image.header).sizeof_hdr
        if int(raw_header["sizeof_hdr"]) != expected:
            raise InputError(f"{path}: {what} header is corrupt (sizeof_hdr {int(raw_header['sizeof_hdr'])}, expected {expected})")
        unit = image.header.get_xyzt_units()[0]
        if unit in OTHER_UNITS:
            raise InputError(f"{path}: {what} voxel sizes are in {OTHER_UNITS[unit]} (NIfTI xyzt_units); lesionseg reads "
                             "millimetres: rewrite the header in mm (voxel sizes and affine scaled)")
        shape = image.shape
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3:
            raise InputError(f"{path}: {what} must be 3D, got shape {tuple(image.shape)}")
        if min(shape) == 0:
            raise InputError(f"{path}: {what} has no voxels (shape {tuple(int(n) for n in shape)})")
        if int(np.prod(shape)) > MAX_VOXELS:
            raise InputError(f"{path}: {what} of shape {shape} is too large (max {MAX_VOXELS} voxels)")
        stored = np.dtype(image.get_data_dtype())
        if stored.kind == "c":
            raise InputError(f"{path}: {what} has complex values ({stored})")
        if stored.kind not in "biuf":
            label = image.header.get_value_label("datatype") if hasattr(image.header, "get_value_label") else str(stored)
            raise InputError(f"{path}: {what} has {label} voxels (dtype {_dtype_name(stored)}), not grey-scale intensities")
        try:
            raw = np.asanyarray(image.dataobj)
        except Exception as exc:  # noqa: BLE001 - short read, broken gzip stream, bad scaling
            reason = _reason(exc)
            if " bytes from " in reason:  # nibabel's "Expected N bytes, got M bytes from <file>": the file is named already
                reason = reason.split(" bytes from ")[0] + " bytes"
            raise InputError(f"{path}: {what} data is truncated or corrupt ({reason})") from None
    with np.errstate(over="ignore", invalid="ignore"):
        data = np.asarray(raw, dtype=dtype).reshape(shape)
    if not np.all(np.isfinite(data)):
        if np.issubdtype(raw.dtype, np.number) and np.all(np.isfinite(raw)):
            peak = float(np.max(np.abs(raw)))
            raise InputError(f"{path}: {what} has values beyond the {np.dtype(dtype).name} range (largest magnitude {peak:.3g})")
        raise InputError(f"{path}: {what} contains NaN or infinite values")
    if not allow_empty and not np.any(data):
        raise InputError(f"{path}: {what} is all zero")
    affine = image.affine
    _note_form_disagreement(path, image.header, shape)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    for sizes in (spacing, np.asarray(raw_header["pixdim"][1:4], dtype=float)):
        if not np.all(np.isfinite(sizes)) or np.any(sizes <= 1e-6) or not np.all(np.isfinite(affine)):
            raise InputError(f"{path}: {what} has a zero or invalid voxel size {np.round(sizes, 4).tolist()}")
    if abs(np.linalg.det(affine[:3, :3])) <= 1e-6 * float(np.prod(spacing)):
        raise InputError(f"{path}: {what} has a singular affine (its voxel axes are not independent)")
    angle = _shear_degrees(affine)
    if angle > SHEAR_TOLERANCE_DEGREES:
        raise InputError(f"{path}: {what} has a sheared voxel grid (its affine's axes are {angle:.2f} degrees from "
                         "perpendicular); resample it onto an orthogonal grid")
    return Image(path=path, data=data, affine=affine, header=image.header)


#: qform and sform further apart than this (mm, at any corner of the volume) are said to disagree
FORM_TOLERANCE_MM = 1e-3


def _note_form_disagreement(path: Path, header, shape) -> None:
    """One warning when both the qform and the sform are set and place the volume differently:
    nibabel (and so SCT) uses the sform; the user should know the file is ambiguous."""
    try:
        if int(header["qform_code"]) <= 0 or int(header["sform_code"]) <= 0:
            return
        q, s = header.get_qform(), header.get_sform()
    except Exception:  # noqa: BLE001 - a header nibabel cannot turn into both forms has one geometry
        return
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]).T
    apart = float(np.max(np.linalg.norm((q - s)[:3] @ corners, axis=0)))
    if apart > FORM_TOLERANCE_MM:
        logger.warning("%s: its qform and sform disagree (by up to %.3g mm); using the sform, as SCT does", path, apart)


#: NIfTI spatial units other than millimetres (nibabel's names): refused, named. A header without a
#: unit ("unknown") is read as millimetres, as nibabel, SCT and most tools read it.
OTHER_UNITS = {"meter": "metres", "micron": "micrometres"}

#: Largest departure from 90 degrees between the voxel axes of an image's affine. Oblique but
#: orthogonal images (any rotation) are fine; float32 sforms of real scans are orthogonal to ~1e-6 degrees.
SHEAR_TOLERANCE_DEGREES = 0.05


def _shear_degrees(affine: np.ndarray) -> float:
    """How far (degrees) the most skewed pair of the affine's voxel axes is from perpendicular."""
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    cosines = np.abs(columns.T @ columns - np.eye(3)).max()
    return float(np.degrees(np.arcsin(min(cosines, 1.0))))


def _raw_header(path: Path, header_class: type):
    """The header as stored in the file, unfixed (nibabel silently replaces a zero pixdim by 1,
    a negative one by its absolute value and a wrong sizeof_hdr by the right one when loading)."""
    from lesionseg.core.nibabel_import import nibabel as nib

    with nib.openers.ImageOpener(str(path)) as handle:
        return header_class.from_fileobj(handle, check=False)


def _dtype_name(dtype: np.dtype) -> str:
    if dtype.names:
        return "(" + ", ".join(f"{name}: {dtype.fields[name][0].name}" for name in dtype.names) + ")"
    return dtype.name


def _load_reason(path: Path, exc: BaseException) -> str:
    reason = _reason(exc)
    if not path.name.endswith(NIFTI_SUFFIXES):
        return f"expected a .nii or .nii.gz file, got {path.suffix or 'no extension'!r}: {reason}"
    return reason


class _NibabelQuiet(logging.Filter):
    """Drops the header fix-up messages nibabel prints on stderr ("pixdim[1,2,3] should be
    positive; setting to abs ...") while `load_nifti` runs in this thread: it reports those
    problems itself, as one error line. They go to the debug log instead."""

    active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self.active, "depth", 0):
            logging.getLogger(__name__).debug("nibabel: %s", record.getMessage())
            return False
        return True


_NIBABEL_FILTER = _NibabelQuiet()
logging.getLogger("nibabel.global").addFilter(_NIBABEL_FILTER)


@contextlib.contextmanager
def _quiet_nibabel():
    active = _NibabelQuiet.active
    active.depth = getattr(active, "depth", 0) + 1
    try:
        yield
    finally:
        active.depth -= 1


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def refuse_existing(paths, *, overwrite: bool) -> None:
    """Raise OutputExistsError naming the first of `paths` that exists, unless `overwrite`."""
    if overwrite:
        return
    for path in paths:
        if Path(path).exists():
            raise OutputExistsError(f"{path}: output exists (use --overwrite to replace it)")


def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path, *, like: object | None = None) -> Path:
    """Write `data` with `affine` to `path` atomically (`lesionseg.core.files.atomic_path`).

    With `like` (a NIfTI header), its qform/sform codes and units are kept.
    """
    from lesionseg.core.nibabel_import import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = like.copy() if like is not None else None
    image = nib.Nifti1Image(data, affine, header=header)
    image.set_data_dtype(data.dtype)
    if header is not None:
        image.set_qform(affine, code=int(header["qform_code"]) or 1)
        image.set_sform(affine, code=int(header["sform_code"]) or 1)
        image.header["scl_slope"], image.header["scl_inter"] = 1.0, 0.0
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(image, str(tmp))
    return path
