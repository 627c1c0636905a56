"""The edge where an image enters: a NIfTI file or a DICOM MR series (a folder of instances, or one
multi-frame file) becomes one `lesionseg.core.image.Image`, loaded once.

A DICOM image keeps its series (`Image.series`) so the results can be written as DICOM objects
that reference it.
"""

from __future__ import annotations

from pathlib import Path

from lesionseg.core.image import Image
from lesionseg.core.nifti import load_nifti


def is_dicom(path: Path | str) -> bool:
    """Whether `path` names a DICOM series (a .dcm / DICOM Part 10 file, or a folder of them)."""
    from lesionseg.client.dicom.series import is_dicom_input

    return is_dicom_input(Path(path))


def load_image(path: Path | str, *, what: str = "image") -> Image:
    """Load a NIfTI image or a DICOM series.

    Raises:
        InputError: one line naming the file or series and the problem.
    """
    path = Path(path)
    if is_dicom(path):
        from lesionseg.client.dicom.series import read_series, series_image

        return series_image(read_series(path), path)
    return load_nifti(path, what=what)
