"""The legacy family on the client: `sct_deepseg_lesion` through the `deepseg_lesion_<contrast>` models.

One image: load it, send it in the model's orientation (SCT's RPI) with an optional centerline
mask (`lesionseg.client.inference`), write SCT's three outputs, the lesion statistics and,
with `qc`, a QC entry whose cord is the centerline the server used. `LegacyJob` is the same for a
batch: each subject's outputs, and a per-subject centerline file from a pattern.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from lesionseg.client.batch.inputs import InputImage, check_pattern, is_pattern, subject_file
from lesionseg.client.batch.runner import Subject
from lesionseg.client.connection import Connection
from lesionseg.client.dicom.outputs import check_format, require_series, writes_dicom, writes_nifti
from lesionseg.client.images import load_image
from lesionseg.client.inference import infer_volume
from lesionseg.client.lesion_stats import LesionStats
from lesionseg.core.image import Image
from lesionseg.core.nifti import load_nifti, refuse_existing, save_nifti, stem
from lesionseg.core.orientation import Reorientation
from lesionseg.core.catalogue import legacy_model
from lesionseg.core.errors import InputError
from lesionseg.core.grid import zoomed_affine
from lesionseg.core.wire import from_uint8

logger = logging.getLogger(__name__)

ORIENTATION = "RPI"  # SCT's code, what the pipeline models expect when their config names none


def _centerline_on_grid(path: Path, image: Image) -> np.ndarray:
    mask = load_nifti(path, what="centerline", dtype=np.float32)
    if mask.data.shape != image.data.shape:
        raise InputError(f"{path}: centerline is not on the grid of {image.path} (shape {mask.data.shape} vs {image.data.shape})")
    if not np.allclose(mask.affine, image.affine, atol=1e-3):
        shift = float(np.abs(mask.affine[:3, 3] - image.affine[:3, 3]).max())
        raise InputError(f"{path}: centerline is not on the grid of {image.path} (same shape, affines differ; "
                         f"origins {shift:.2f} mm apart)")
    return (mask.data > 0).astype(np.uint8)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LegacyResult:
    """What one `deepseg_lesion` run wrote (`files`, empty when NIfTI outputs were not asked
    for), the lesion mask (`lesion`, input grid), its statistics, and the cord centerline it used.

    `centerline_rpi` is (z, 3): (x, y, z) voxel coordinates in the RPI-reoriented input grid.
    """

    files: dict[str, Path]
    centerline_rpi: np.ndarray
    rpi: Reorientation
    lesion_voxels: int
    image: Image
    lesion: Image
    stats: LesionStats

    @property
    def lesions(self) -> int:
        return self.stats.count

    @property
    def lesion_volume_mm3(self) -> float:
        return self.stats.total_volume_mm3


def legacy_outputs(image_path: Path, ofolder: Path) -> dict[str, Path]:
    """SCT's output names of `sct_deepseg_lesion` for `image_path` in `ofolder` (the NIfTI files)."""
    name = stem(image_path)
    return {
        "lesionseg": ofolder / f"{name}_lesionseg.nii.gz",
        "rpi_seg": ofolder / f"{name}_RPI_seg.nii.gz",
        "res_rpi_seg": ofolder / f"{name}_res_RPI_seg.nii.gz",
    }


def segment_legacy(link: Connection, image: Path | Image, contrast: str, *, ofolder: Path, centerline_file: Path | None = None,
                   qc: Path | None = None, overwrite: bool = False, write_nifti: bool = True) -> LegacyResult:
    """Segment lesions in one image (a NIfTI file or DICOM series, see `lesionseg.client.images`)
    with `deepseg_lesion_<contrast>` on the server behind `link`.

    Outputs (SCT's three NIfTI files and the lesion sidecars, unless `write_nifti` is False) are
    written only after the server answered; each is written atomically.
    """
    from lesionseg.client.lesion_stats import mask_stats, mask_volume, write_sidecars

    loaded = image if isinstance(image, Image) else load_image(image)
    volume = loaded
    outputs = legacy_outputs(volume.path, ofolder)
    if write_nifti:
        refuse_existing(outputs.values(), overwrite=overwrite)
    extra = {"CENTERLINE": _centerline_on_grid(centerline_file, volume)} if centerline_file is not None else None
    reply = infer_volume(link, legacy_model(contrast), volume, default_orientation=ORIENTATION,
                         outputs=["SEG", "PROB", "RES_PROB", "CENTERLINE_XYZ"], grid_outputs=("SEG", "PROB"),
                         extra_inputs=extra, output_shapes=lambda shape: {"CENTERLINE_XYZ": ((shape[2], 3), np.float32)})
    orient, data = reply.orient, reply.data
    seg_rpi = reply.outputs["SEG"]
    lesion = mask_volume(orient.backward(seg_rpi).astype(np.uint8), volume, outputs["lesionseg"])
    stats = mask_stats(lesion)
    files: dict[str, Path] = {}
    if write_nifti:
        res_prob = from_uint8(reply.outputs["RES_PROB"])
        rpi_affine = orient.target_affine(volume.affine)
        save_nifti(res_prob, zoomed_affine(rpi_affine, data.shape, res_prob.shape), outputs["res_rpi_seg"], like=volume.header)
        save_nifti(from_uint8(reply.outputs["PROB"]), rpi_affine, outputs["rpi_seg"], like=volume.header)
        save_nifti(orient.backward(seg_rpi).astype(np.uint8), volume.affine, outputs["lesionseg"], like=volume.header)
        files = dict(outputs)
        files["lesions_tsv"], files["lesions_json"] = write_sidecars(stats, outputs["lesionseg"])
    logger.info("%s: %d lesions, %d lesion voxels", volume.path, stats.count, int(seg_rpi.sum()))
    centerline_rpi = reply.outputs["CENTERLINE_XYZ"]
    if qc is not None:
        from lesionseg.client.qc.masks import write_qc

        cord_rpi = np.zeros(data.shape, np.uint8)
        xs = np.clip(np.rint(centerline_rpi[:, 0]).astype(int), 0, data.shape[0] - 1)
        ys = np.clip(np.rint(centerline_rpi[:, 1]).astype(int), 0, data.shape[1] - 1)
        cord_rpi[xs, ys, np.arange(data.shape[2])] = 1
        files["qc"] = write_qc(qc, volume, cord=orient.backward(cord_rpi), cord_source="the centerline", lesion=lesion,
                               command="deepseg-lesion", contrast=contrast)
    return LegacyResult(files=files, centerline_rpi=centerline_rpi, rpi=orient, lesion_voxels=int(seg_rpi.sum()),
                        image=loaded, lesion=lesion, stats=stats)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LegacyJob:
    """`segment_legacy` for one image or every image of a batch: outputs in `ofolder` (in a batch,
    mirroring each image's place in its dataset); the centerline from `centerline`, a file, a
    per-subject pattern (`lesionseg.client.batch.inputs.subject_file`) or None for the CNN's;
    with `output_format` dicom or both, a DICOM SEG and SR of a DICOM input.

    Raises:
        UsageError: a malformed centerline pattern, an unknown output format.
    """

    contrast: str
    ofolder: Path
    centerline: str | None = None
    qc: Path | None = None
    output_format: str = "nifti"
    dicom_qc: bool = False  # with DICOM output, also a Secondary Capture of the QC mosaic

    def __post_init__(self) -> None:
        if self.centerline is not None and is_pattern(self.centerline):
            check_pattern(self.centerline, option="-file_centerline")
        check_format(self.output_format, dicom_qc=self.dicom_qc)

    @property
    def model(self) -> str:
        return legacy_model(self.contrast)

    @property
    def description(self) -> str:
        return f"deepseg-lesion {self.contrast}"

    @property
    def nifti(self) -> bool:
        return writes_nifti(self.output_format)

    def folder(self, image: ImageImage) -> Path:
        return self.ofolder / image.relative

    def plan(self, link: Connection, image: ImageImage) -> Subject:
        """The subject's outputs; the model must be served before anything starts."""
        from lesionseg.client.dicom.outputs import dicom_paths
        from lesionseg.client.lesion_stats import sidecar_paths

        link.parameters(self.model)
        files = legacy_outputs(image.path, self.folder(image))
        dicom = tuple(dicom_paths(image.path, self.model, self.folder(image), qc=self.dicom_qc).values()) \
            if writes_dicom(self.output_format) else ()
        if not self.nifti:
            return Subject(image=image, grid_outputs=(), other_outputs=dicom)
        return Subject(image=image, grid_outputs=(files["lesionseg"], files["rpi_seg"]),
                       other_outputs=(files["res_rpi_seg"], *sidecar_paths(files["lesionseg"]), *dicom))

    def centerline_file(self, image: ImageImage) -> Path | None:
        """The centerline file of `image` (None: the CNN's centerline).

        Raises:
            InputError: naming the image, when a pattern's file does not exist.
        """
        if self.centerline is None:
            return None
        return subject_file(self.centerline, image, what="centerline") if is_pattern(self.centerline) else Path(self.centerline)

    def segment(self, link: Connection, image: ImageImage, *, overwrite: bool = False, loaded: Image | None = None,
                cord: np.ndarray | None = None) -> LegacyResult:
        """Segment `image` (outputs in `folder(image)`; `loaded`: the image already read); with
        DICOM output, `cord` (a cord mask on the image's grid) becomes the SEG's cord segment.

        Raises:
            UsageError: DICOM output asked of a NIfTI input; OutputExistsError.
        """
        from lesionseg.client.dicom.outputs import dicom_paths

        loaded = loaded if loaded is not None else load_image(image.path)
        require_series(loaded, self.output_format)
        dicom_files = dicom_paths(loaded.path, self.model, self.folder(image), qc=self.dicom_qc) \
            if writes_dicom(self.output_format) else {}
        refuse_existing(dicom_files.values(), overwrite=overwrite)
        result = segment_legacy(link, loaded, self.contrast, ofolder=self.folder(image),
                                centerline_file=self.centerline_file(image), qc=self.qc, overwrite=overwrite,
                                write_nifti=self.nifti)
        if dicom_files:
            from lesionseg.client.dicom.outputs import write_dicom
            from lesionseg.client.dicom.results import Algorithm

            algorithm = Algorithm.of_model(self.model, link.parameters(self.model))
            written = write_dicom(loaded.series, dicom_files, algorithm, lesion=result.lesion.data,  # type: ignore[arg-type]
                                  stats=result.stats, cord=cord, image=loaded)
            result = dataclasses.replace(result, files={**result.files, **written})
        return result

    def run(self, link: Connection, subject: Subject) -> str:
        """Segment one subject (its existing outputs were refused, or accepted with --resume /
        --overwrite, before the batch started); returns the summary's note."""
        result = self.segment(link, subject.image, overwrite=True)
        return f"{result.lesions} lesions, {result.lesion_volume_mm3:.1f} mm3"
