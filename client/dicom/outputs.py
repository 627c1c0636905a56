"""One series' results as DICOM objects: `<stem>_<model>_seg.dcm` (DICOM SEG), `<stem>_<model>_sr.dcm`
(TID 1500 SR) and, on request, `<stem>_<model>_qc.dcm` (a Secondary Capture of the QC mosaic).
`dicom_objects` builds them all in memory; the writer (`lesionseg.client.writer`) saves them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lesionseg.client.dicom import results
from lesionseg.client.dicom.series import DicomSeries
from lesionseg.client.lesion_stats import LesionStats, voxel_volume_mm3
from lesionseg.core.image import Image
from lesionseg.core.interface import ModelInfo

SEG, SR, QC = "seg", "sr", "qc"


def dicom_paths(stem: str, model: str, folder: Path, *, qc: bool = False) -> dict[str, Path]:
    """The SEG and SR (and with `qc` the QC capture) file names of the results of `model` for the
    series named `stem`, in `folder`."""
    paths = {SEG: folder / f"{stem}_{model}_seg.dcm", SR: folder / f"{stem}_{model}_sr.dcm"}
    if qc:
        paths[QC] = folder / f"{stem}_{model}_qc.dcm"
    return paths


def dicom_objects(series: DicomSeries, model: ModelInfo, *, lesion: np.ndarray | None, stats: LesionStats | None,
                  cord: np.ndarray | None, image: Image, capture: bool) -> dict[str, object]:
    """The SEG (lesion and/or cord segments), the SR (lesion statistics `stats` of `lesion`, cord
    volume) and with `capture` the QC Secondary Capture of `image` (the series' image); masks are
    (x, y, z) on the series grid, > 0 inside. Keys as `dicom_paths`'."""
    algorithm = results.Algorithm.of_model(model.name, model.parameters)
    masks = {}
    if lesion is not None:
        masks[results.LESION] = (lesion > 0).astype(np.uint8)
    if cord is not None:
        masks[results.CORD] = (cord > 0).astype(np.uint8)
    seg = results.segmentation(series, masks, algorithm)
    cord_volume = float((cord > 0).sum()) * voxel_volume_mm3(series.spacing) if cord is not None else None
    objects = {SEG: seg, SR: results.report(series, seg, stats if lesion is not None else None, algorithm,
                                            cord_volume_mm3=cord_volume)}
    if capture:
        objects[QC] = results.qc_capture(series, image, algorithm, lesion=lesion, cord=cord)
    return objects
