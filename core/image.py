"""The one image type of lesionseg: a 3D volume loaded once, at the edge, with its geometry and
where it came from.

`Image.data` is (x, y, z) in the file's own axis order (the DICOM series' column, row, sorted
slice order); `affine` maps voxel indices to RAS+ millimetres; `header` is a NIfTI header whose
zooms are the voxel size (a DICOM series gets one made from its geometry). `path` is what
messages and output names use: the NIfTI file, or the DICOM series' folder (or single file);
`series` is the DICOM series with its datasets (`lesionseg.client.dicom.series.DicomSeries`) when
the image came from one, else None; `dataset` is the dataset (a BIDS dataset or a scanned folder)
a batch found it in, else None. Masks and maps on an image's grid are plain arrays of that
(x, y, z) shape.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True, kw_only=True)
class Image:
    """A loaded 3D image (see the module docstring)."""

    path: Path
    data: np.ndarray
    affine: np.ndarray
    header: object
    series: object | None = None
    dataset: Path | None = None

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

    @property
    def axis_codes(self) -> tuple[str, str, str]:
        """The anatomical direction each array axis points to (nibabel codes, e.g. ("L", "A", "S"))."""
        from lesionseg.core.nibabel_import import nibabel

        return tuple(nibabel.orientations.aff2axcodes(self.affine))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    def with_data(self, data: np.ndarray, *, affine: np.ndarray | None = None) -> "Image":
        """The same image (header, source, series) holding `data` (on `affine`'s grid, default its own)."""
        return dataclasses.replace(self, data=data, affine=self.affine if affine is None else affine)
