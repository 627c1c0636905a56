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
from lesionseg.client.inference import infer_volume
from lesionseg.client.nifti import Volume, load_volume, refuse_existing, save_volume, stem
from lesionseg.client.orientation import Reorientation
from lesionseg.core.catalogue import legacy_model
from lesionseg.core.errors import InputError
from lesionseg.core.grid import zoomed_affine
from lesionseg.core.wire import from_uint8

logger = logging.getLogger(__name__)

ORIENTATION = "RPI"  # SCT's code, what the pipeline models expect when their config names none


def _centerline_on_grid(path: Path, image: Volume) -> np.ndarray:
    mask = load_volume(path, what="centerline", dtype=np.float32)
    if mask.data.shape != image.data.shape:
        raise InputError(f"{path}: centerline is not on the grid of {image.path} (shape {mask.data.shape} vs {image.data.shape})")
    if not np.allclose(mask.affine, image.affine, atol=1e-3):
        shift = float(np.abs(mask.affine[:3, 3] - image.affine[:3, 3]).max())
        raise InputError(f"{path}: centerline is not on the grid of {image.path} (same shape, affines differ; "
                         f"origins {shift:.2f} mm apart)")
    return (mask.data > 0).astype(np.uint8)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LegacyResult:
    """What one `deepseg_lesion` run wrote, and the cord centerline it used.

    `centerline_rpi` is (z, 3): (x, y, z) voxel coordinates in the RPI-reoriented input grid.
    """

    files: dict[str, Path]
    centerline_rpi: np.ndarray
    rpi: Reorientation
    lesion_voxels: int
    lesions: int = 0
    lesion_volume_mm3: float = 0.0


def legacy_outputs(image_path: Path, ofolder: Path) -> dict[str, Path]:
    """SCT's output names of `sct_deepseg_lesion` for `image_path` in `ofolder` (the NIfTI files)."""
    name = stem(image_path)
    return {
        "lesionseg": ofolder / f"{name}_lesionseg.nii.gz",
        "rpi_seg": ofolder / f"{name}_RPI_seg.nii.gz",
        "res_rpi_seg": ofolder / f"{name}_res_RPI_seg.nii.gz",
    }


def segment_legacy(link: Connection, image_path: Path, contrast: str, *, ofolder: Path, centerline_file: Path | None = None,
                   qc: Path | None = None, overwrite: bool = False) -> LegacyResult:
    """Segment lesions in one image with `deepseg_lesion_<contrast>` on the server behind `link`.

    Outputs are written only after the server answered; each is written atomically.
    """
    from lesionseg.client.lesion_stats import load_lesion_mask, write_mask_sidecars

    image = load_volume(image_path)
    outputs = legacy_outputs(image_path, ofolder)
    refuse_existing(outputs.values(), overwrite=overwrite)
    extra = {"CENTERLINE": _centerline_on_grid(centerline_file, image)} if centerline_file is not None else None
    reply = infer_volume(link, legacy_model(contrast), image, default_orientation=ORIENTATION,
                         outputs=["SEG", "PROB", "RES_PROB", "CENTERLINE_XYZ"], grid_outputs=("SEG", "PROB"),
                         extra_inputs=extra, output_shapes=lambda shape: {"CENTERLINE_XYZ": ((shape[2], 3), np.float32)})
    orient, data = reply.orient, reply.data
    seg_rpi = reply.outputs["SEG"]
    res_prob = from_uint8(reply.outputs["RES_PROB"])
    rpi_affine = orient.target_affine(image.affine)
    save_volume(res_prob, zoomed_affine(rpi_affine, data.shape, res_prob.shape), outputs["res_rpi_seg"], like=image.header)
    save_volume(from_uint8(reply.outputs["PROB"]), rpi_affine, outputs["rpi_seg"], like=image.header)
    save_volume(orient.backward(seg_rpi).astype(np.uint8), image.affine, outputs["lesionseg"], like=image.header)
    lesion = load_lesion_mask(outputs["lesionseg"])
    outputs["lesions_tsv"], outputs["lesions_json"], stats = write_mask_sidecars(lesion)
    logger.info("%s: %d lesions, %d lesion voxels", image_path, stats.count, int(seg_rpi.sum()))
    centerline_rpi = reply.outputs["CENTERLINE_XYZ"]
    if qc is not None:
        from lesionseg.client.qc.masks import write_qc

        cord_rpi = np.zeros(data.shape, np.uint8)
        xs = np.clip(np.rint(centerline_rpi[:, 0]).astype(int), 0, data.shape[0] - 1)
        ys = np.clip(np.rint(centerline_rpi[:, 1]).astype(int), 0, data.shape[1] - 1)
        cord_rpi[xs, ys, np.arange(data.shape[2])] = 1
        outputs["qc"] = write_qc(qc, image, cord=orient.backward(cord_rpi), cord_source="the centerline", lesion=lesion,
                                 command="deepseg-lesion", contrast=contrast)
    return LegacyResult(files=outputs, centerline_rpi=centerline_rpi, rpi=orient, lesion_voxels=int(seg_rpi.sum()),
                        lesions=stats.count, lesion_volume_mm3=stats.total_volume_mm3)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LegacyJob:
    """`segment_legacy` for one image or every image of a batch: outputs in `ofolder` (in a batch,
    mirroring each image's place in its dataset); the centerline from `centerline`, a file, a
    per-subject pattern (`lesionseg.client.batch.inputs.subject_file`) or None for the CNN's.

    Raises:
        UsageError: a malformed centerline pattern.
    """

    contrast: str
    ofolder: Path
    centerline: str | None = None
    qc: Path | None = None

    def __post_init__(self) -> None:
        if self.centerline is not None and is_pattern(self.centerline):
            check_pattern(self.centerline, option="-file_centerline")

    @property
    def model(self) -> str:
        return legacy_model(self.contrast)

    @property
    def description(self) -> str:
        return f"deepseg-lesion {self.contrast}"

    def folder(self, image: InputImage) -> Path:
        return self.ofolder / image.relative

    def plan(self, link: Connection, image: InputImage) -> Subject:
        """The subject's outputs; the model must be served before anything starts."""
        from lesionseg.client.lesion_stats import sidecar_paths

        link.parameters(self.model)
        files = legacy_outputs(image.path, self.folder(image))
        return Subject(image=image, grid_outputs=(files["lesionseg"], files["rpi_seg"]),
                       other_outputs=(files["res_rpi_seg"], *sidecar_paths(files["lesionseg"])))

    def centerline_file(self, image: InputImage) -> Path | None:
        """The centerline file of `image` (None: the CNN's centerline).

        Raises:
            InputError: naming the image, when a pattern's file does not exist.
        """
        if self.centerline is None:
            return None
        return subject_file(self.centerline, image, what="centerline") if is_pattern(self.centerline) else Path(self.centerline)

    def segment(self, link: Connection, image: InputImage, *, overwrite: bool = False) -> LegacyResult:
        """Segment `image` (outputs in `folder(image)`)."""
        return segment_legacy(link, image.path, self.contrast, ofolder=self.folder(image),
                              centerline_file=self.centerline_file(image), qc=self.qc, overwrite=overwrite)

    def run(self, link: Connection, subject: Subject) -> str:
        """Segment one subject (its existing outputs were refused, or accepted with --resume /
        --overwrite, before the batch started); returns the summary's note."""
        result = self.segment(link, subject.image, overwrite=True)
        return f"{result.lesions} lesions, {result.lesion_volume_mm3:.1f} mm3"
