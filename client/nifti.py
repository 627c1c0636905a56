"""NIfTI input and output: strict validation with one-line errors, atomic writes.

Volumes are 3D arrays in the file's own axis order; `Volume.spacing` is the voxel size in mm.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from lesionseg.client.errors import InputError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
MAX_VOXELS = 512 * 512 * 1024


def stem(path: Path) -> str:
    """File name without .nii / .nii.gz: sub-01_T2w.nii.gz -> sub-01_T2w."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


@dataclasses.dataclass(frozen=True, kw_only=True)
class Volume:
    """A loaded 3D image: `data` (x, y, z) in file order, its `affine` (voxel -> RAS mm), `header`."""

    path: Path
    data: np.ndarray
    affine: np.ndarray
    header: object

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) per array axis: the header's pixdim, as SCT's `Image.dim[4:7]` — what SCT
        hands nnU-Net and its resampling. The values are float32 in the file, so they travel to
        the server as FP32 exactly (affine column norms can differ in the 9th digit, enough to change
        a rounded resampled shape)."""
        zooms = self.header.get_zooms()[:3] if hasattr(self.header, "get_zooms") else ()
        if len(zooms) == 3 and all(float(z) > 0 for z in zooms):
            return tuple(float(z) for z in zooms)  # type: ignore[return-value]
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


def load_volume(path: str | Path, *, what: str = "image", allow_empty: bool = False, dtype=np.float32) -> Volume:
    """Load and check a 3D NIfTI volume.

    Raises:
        InputError: missing, not NIfTI, truncated or corrupt, not 3D, complex, NaN/inf,
            all zero (unless `allow_empty`), zero or non-finite spacing, too large.
    """
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} file does not exist")
    if path.is_dir():
        raise InputError(f"{path}: {what} is a directory, not a NIfTI file")
    try:
        image = nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(f"{path}: not a readable NIfTI {what} ({_reason(exc)})") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: {what} is {type(image).__name__}, not NIfTI")
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"{path}: {what} must be 3D, got shape {tuple(image.shape)}")
    if int(np.prod(shape)) > MAX_VOXELS:
        raise InputError(f"{path}: {what} of shape {shape} is too large (max {MAX_VOXELS} voxels)")
    if np.dtype(image.get_data_dtype()).kind == "c":
        raise InputError(f"{path}: {what} has complex values ({image.get_data_dtype()})")
    try:
        raw = np.asanyarray(image.dataobj)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(f"{path}: {what} data is truncated or corrupt ({_reason(exc)})") from None
    data = np.asarray(raw, dtype=dtype).reshape(shape)
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: {what} contains NaN or infinite values")
    if not allow_empty and not np.any(data):
        raise InputError(f"{path}: {what} is all zero")
    affine = image.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    for sizes in (spacing, _raw_voxel_size(path, type(image.header))):
        if not np.all(np.isfinite(sizes)) or np.any(sizes <= 1e-6) or not np.all(np.isfinite(affine)):
            raise InputError(f"{path}: {what} has a zero or invalid voxel size {np.round(sizes, 4).tolist()}")
    return Volume(path=path, data=data, affine=affine, header=image.header)


def _raw_voxel_size(path: Path, header_class: type) -> np.ndarray:
    """pixdim[1:4] as stored in the file (nibabel silently replaces zeros by 1 when loading)."""
    import nibabel as nib

    with nib.openers.ImageOpener(str(path)) as handle:
        header = header_class.from_fileobj(handle, check=False)
    return np.asarray(header["pixdim"][1:4], dtype=float)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _read_umask() -> int:
    mask = os.umask(0o022)  # read once, at import (before any worker thread creates files)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _file_mode() -> int:
    """0666 less the process umask: what a plain open() would have created."""
    return 0o666 & ~_UMASK


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` to a temporary file in `path`'s folder, then rename it onto `path` (mode 0644:
    reports and sidecars are read by others)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, _file_mode())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def refuse_existing(paths, *, overwrite: bool) -> None:
    """Raise OutputExistsError naming the first of `paths` that exists, unless `overwrite`."""
    if overwrite:
        return
    for path in paths:
        if Path(path).exists():
            from lesionseg.client.errors import OutputExistsError

            raise OutputExistsError(f"{path}: output exists (use --overwrite to replace it)")


def save_volume(data: np.ndarray, affine: np.ndarray, path: Path, *, like: object | None = None) -> Path:
    """Write `data` with `affine` to `path` atomically (temporary file in the same folder + rename).

    With `like` (a NIfTI header), its qform/sform codes and units are kept.
    """
    import nibabel as nib

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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        nib.save(image, tmp)
        os.chmod(tmp, _file_mode())  # mkstemp makes 0600; outputs are read by others (PACS, QC viewers)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
