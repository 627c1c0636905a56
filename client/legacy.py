"""Client side of the legacy pipeline: load, reorient, one gRPC call, write SCT's outputs."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from lesionseg.core.errors import InferenceError, InputError
from lesionseg.client.nifti import Volume, load_volume, refuse_existing, save_volume, stem
from lesionseg.client.orientation import Reorientation, reorientation, sct_to_nib
from lesionseg.core.grid import zoomed_affine

logger = logging.getLogger(__name__)


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


def segment_legacy(
    image_path: Path, contrast: str, *, ofolder: Path, url: str | None, centerline_file: Path | None = None,
    qc: Path | None = None, overwrite: bool = False, transport=None,
) -> LegacyResult:
    """Segment lesions in one image with `deepseg_lesion_<contrast>`.

    Outputs are written only after the server answered; each is written atomically.
    """
    from lesionseg.client.session import open_transport

    image = load_volume(image_path)
    outputs = legacy_outputs(image_path, ofolder)
    refuse_existing(outputs.values(), overwrite=overwrite)
    centerline = _centerline_on_grid(centerline_file, image) if centerline_file is not None else None
    model = f"deepseg_lesion_{contrast}"
    with open_transport(url, transport) as link:
        params = link.parameters(model)
        orient = reorientation(image.affine, image.data.shape, sct_to_nib(params.get("orientation", "RPI")))
        data = np.ascontiguousarray(orient.forward(image.data), dtype=np.float32)
        spacing = np.asarray(orient.forward_spacing(image.spacing), np.float32)
        inputs = {"IMAGE": data, "SPACING": spacing}
        if centerline is not None:
            inputs["CENTERLINE"] = np.ascontiguousarray(orient.forward(centerline))
        result = link.infer(model, inputs, ["SEG", "PROB", "RES_PROB", "CENTERLINE_XYZ"], source=image_path,
                            output_shapes={"SEG": (data.shape, np.uint8), "PROB": (data.shape, np.uint8),
                                           "CENTERLINE_XYZ": ((data.shape[2], 3), np.float32)})
    seg_rpi = result["SEG"]
    prob_rpi = result["PROB"].astype(np.float32) / 255.0
    res_prob = result["RES_PROB"].astype(np.float32) / 255.0
    if seg_rpi.shape != data.shape:
        raise InferenceError(f"{image_path}: server returned a mask of shape {seg_rpi.shape}, expected {data.shape}")
    rpi_affine = orient.target_affine(image.affine)
    save_volume(res_prob, zoomed_affine(rpi_affine, data.shape, res_prob.shape), outputs["res_rpi_seg"], like=image.header)
    save_volume(prob_rpi, rpi_affine, outputs["rpi_seg"], like=image.header)
    save_volume(orient.backward(seg_rpi).astype(np.uint8), image.affine, outputs["lesionseg"], like=image.header)
    from lesionseg.client.lesion_stats import stats_record, write_mask_sidecars

    outputs["lesions_tsv"], outputs["lesions_json"], stats = write_mask_sidecars(outputs["lesionseg"])
    logger.info("%s: %d lesions, %d lesion voxels", image_path, stats.count, int(seg_rpi.sum()))
    centerline_rpi = result["CENTERLINE_XYZ"]
    if qc is not None:
        from lesionseg.client.qc.report import QcEntry, axial_mosaic, write_entry

        cord = np.zeros(data.shape, np.uint8)
        xs = np.clip(np.rint(centerline_rpi[:, 0]).astype(int), 0, data.shape[0] - 1)
        ys = np.clip(np.rint(centerline_rpi[:, 1]).astype(int), 0, data.shape[1] - 1)
        cord[xs, ys, np.arange(data.shape[2])] = 1
        background, overlay = axial_mosaic(data, spacing, centerline_rpi[:, :2], lesion=seg_rpi, cord=cord)
        folder = write_entry(qc, QcEntry(command="deepseg-lesion", contrast=contrast, fname_in=image_path,
                                         fname_seg=outputs["lesionseg"],
                                         extra={"lesions": stats_record(stats, mask_path=outputs["lesionseg"])}),
                             background, overlay)
        outputs["qc"] = folder
    return LegacyResult(files=outputs, centerline_rpi=centerline_rpi, rpi=orient, lesion_voxels=int(seg_rpi.sum()),
                        lesions=stats.count, lesion_volume_mm3=stats.total_volume_mm3)


def _tensor(name: str, array: np.ndarray):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(np.ascontiguousarray(array))
    return tensor
