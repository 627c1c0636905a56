"""The legacy family: `sct_deepseg_lesion` through the `deepseg_lesion_<contrast>` pipeline models.

`LegacyJob.segment` sends the image in the model's orientation (SCT's RPI) with an optional
centerline mask; the server answers the lesion mask (thresholded there), the two soft maps SCT
writes (`_RPI_seg` on the RPI-reoriented grid, `_res_RPI_seg` on the 0.5 mm in-plane grid) and
the centerline it followed, which QC draws as the cord.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from lesionseg.client.inference import infer_labels, send
from lesionseg.client.lesion_stats import image_stats
from lesionseg.client.result import Map, Outputs, Result
from lesionseg.client.servers import Server, ServerPool
from lesionseg.core.catalogue import legacy_model
from lesionseg.core.errors import InputError, UsageError
from lesionseg.core.grid import zoomed_affine
from lesionseg.core.image import Image
from lesionseg.core.interface import ModelInfo, ModelKind, Tensor
from lesionseg.core.nifti import load_nifti, stem
from lesionseg.core.wire import from_uint8

logger = logging.getLogger(__name__)

#: the keys of a legacy `Result`: its lesion mask and SCT's two soft maps
LESION, RPI_SEG, RES_RPI_SEG = "lesion", "rpi_seg", "res_rpi_seg"


def legacy_outputs(image_path: Path, ofolder: Path) -> dict[str, Path]:
    """SCT's output names of `sct_deepseg_lesion` for `image_path` in `ofolder` (the NIfTI files)."""
    name = stem(image_path)
    return {
        LESION: ofolder / f"{name}_lesionseg.nii.gz",
        RPI_SEG: ofolder / f"{name}_RPI_seg.nii.gz",
        RES_RPI_SEG: ofolder / f"{name}_res_RPI_seg.nii.gz",
    }


def centerline_on_grid(path: Path, image: Image) -> np.ndarray:
    """A centerline (or cord mask) file as a uint8 mask on `image`'s grid.

    Raises:
        InputError: unreadable, or not on the image's grid.
    """
    mask = load_nifti(path, what="centerline", dtype=np.float32)
    if mask.data.shape != image.data.shape:
        raise InputError(f"{path}: centerline is not on the grid of {image.path} (shape {mask.data.shape} vs {image.data.shape})")
    if not np.allclose(mask.affine, image.affine, atol=1e-3):
        shift = float(np.abs(mask.affine[:3, 3] - image.affine[:3, 3]).max())
        raise InputError(f"{path}: centerline is not on the grid of {image.path} (same shape, affines differ; "
                         f"origins {shift:.2f} mm apart)")
    return (mask.data > 0).astype(np.uint8)


def centerline_mask(coordinates: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The voxels of a centerline given as one (x, y, z) voxel position per slice (z, 3), on a grid of `shape`."""
    mask = np.zeros(shape, np.uint8)
    xs = np.clip(np.rint(coordinates[:, 0]).astype(int), 0, shape[0] - 1)
    ys = np.clip(np.rint(coordinates[:, 1]).astype(int), 0, shape[1] - 1)
    mask[xs, ys, np.arange(shape[2])] = 1
    return mask


@dataclasses.dataclass(frozen=True, kw_only=True)
class LegacyJob:
    """`sct_deepseg_lesion -c <contrast>` on the servers of `servers`.

    `centerline`: None for the CNN's centerline, else a file, or a pattern naming each image's
    file (`lesionseg.client.batch.inputs.subject_file`); `cord_task`: a task whose cord mask
    becomes the cord segment of the DICOM results (the gateway's routes).

    Raises:
        UsageError: a malformed centerline pattern; ModelNotFoundError: the pipeline (or the cord
            task) is not served.
    """

    servers: ServerPool
    contrast: str
    centerline: str | None = None
    cord_task: str | None = None
    info: ModelInfo = dataclasses.field(init=False)
    cord_info: ModelInfo | None = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        from lesionseg.client.subject_files import check_pattern, is_pattern

        if self.centerline is not None and is_pattern(self.centerline):
            check_pattern(self.centerline, option="-file_centerline")
        info = self.servers.model(self.model)
        if info.kind != ModelKind.LEGACY:
            raise UsageError(f"model {self.model!r} is not a sct_deepseg_lesion pipeline")
        object.__setattr__(self, "info", info)
        object.__setattr__(self, "cord_info", self.servers.model(self.cord_task) if self.cord_task else None)

    @property
    def model(self) -> str:
        return legacy_model(self.contrast)

    @property
    def description(self) -> str:
        return f"deepseg-lesion {self.contrast}"

    def outputs(self, path: Path, folder: Path | None, *, output: Path | None = None) -> Outputs:
        """SCT's names in `folder` (default: the working folder)."""
        if output is not None:
            raise UsageError("deepseg-lesion names its outputs itself (SCT's names); use -ofolder")
        folder = folder if folder is not None else Path(".")
        names = legacy_outputs(path, folder)
        masks = {LESION: names[LESION]}
        return Outputs(masks=masks, named=masks, maps={RPI_SEG: names[RPI_SEG], RES_RPI_SEG: names[RES_RPI_SEG]},
                       lesion_file=names[LESION], folder=folder, command="deepseg-lesion", contrast=self.contrast)

    def centerline_file(self, image: Image) -> Path | None:
        """The centerline file of `image` (None: the CNN's centerline).

        Raises:
            InputError: naming the image, when a pattern's file does not exist.
        """
        from lesionseg.client.subject_files import is_pattern, subject_file

        if self.centerline is None:
            return None
        if is_pattern(self.centerline):
            return subject_file(self.centerline, image.path, image.dataset, what="centerline")
        return Path(self.centerline)

    def segment(self, image: Image) -> Result:
        """Segment the lesions of `image` (see the module docstring).

        Raises:
            InputError: a bad centerline file; InferenceError: the server refused the image (no
                cord found, too small, ...); ServerUnavailableError.
        """
        file = self.centerline_file(image)
        extra = {Tensor.CENTERLINE: centerline_on_grid(file, image)} if file is not None else None

        def work(server: Server):
            reply = send(server, self.info, image, outputs=[Tensor.SEG, Tensor.PROB, Tensor.RES_PROB, Tensor.CENTERLINE_XYZ],
                         grid_outputs=(Tensor.SEG, Tensor.PROB), extra_inputs=extra,
                         output_shapes=lambda shape: {Tensor.CENTERLINE_XYZ: ((shape[2], 3), np.float32)})
            cord = infer_labels(server, self.cord_info, image) if self.cord_info is not None else None
            return reply, cord

        (reply, cord), address = self.servers.run(work)
        lesion = reply.back(Tensor.SEG)
        stats = image_stats(lesion, image)
        logger.info("%s: %d lesions, %d lesion voxels", image.path, stats.count, int(np.count_nonzero(lesion)))
        rpi_affine = reply.orient.target_affine(image.affine)
        res_prob = from_uint8(reply.outputs[Tensor.RES_PROB])
        maps = {RPI_SEG: Map(data=from_uint8(reply.outputs[Tensor.PROB]), affine=rpi_affine),
                RES_RPI_SEG: Map(data=res_prob, affine=zoomed_affine(rpi_affine, reply.shape, res_prob.shape))}
        centerline = reply.orient.backward(centerline_mask(reply.outputs[Tensor.CENTERLINE_XYZ], reply.shape))
        return Result(image=image, model=self.info, masks={LESION: lesion}, lesion=LESION, cord=cord, centerline=centerline,
                      cord_source="the centerline", maps=maps, stats=stats, server=address)
