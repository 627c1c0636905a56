"""The input image of a segmentation: a NIfTI file or a DICOM MR series (a folder of instances,
or one multi-frame file), loaded the same way for every pipeline.

The DICOM series travels along (`Input.series`) so the results can be written as DICOM objects
that reference it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lesionseg.client.nifti import Volume, load_volume


@dataclasses.dataclass(frozen=True, kw_only=True)
class Input:
    """A loaded input: its `volume` ((x, y, z) FP32, RAS+ affine) and, for DICOM, the `series`."""

    volume: Volume
    series: object | None = None  # lesionseg.client.dicom.series.DicomSeries

    @property
    def path(self) -> Path:
        return self.volume.path


def is_dicom(path: Path | str) -> bool:
    """Whether `path` names a DICOM series (a .dcm / DICOM Part 10 file, or a folder of them)."""
    from lesionseg.client.dicom.series import is_dicom_input

    return is_dicom_input(Path(path))


def load_input(path: Path | str, *, what: str = "image") -> Input:
    """Load a NIfTI image or a DICOM series.

    Raises:
        InputError: one line naming the file or series and the problem.
    """
    path = Path(path)
    if is_dicom(path):
        from lesionseg.client.dicom.series import read_series, series_volume

        series = read_series(path)
        return Input(volume=series_volume(series, path), series=series)
    return Input(volume=load_volume(path, what=what))


def load_image(path: Path | str, *, what: str = "image") -> Volume:
    """The volume of `load_input`."""
    return load_input(path, what=what).volume
