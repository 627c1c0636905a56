"""Parity reports of the legacy pipelines at a reduced precision.

The report runs the pipeline's own code in process (`segment_lesions`) on every real image, once
with every network in FP32 on ONNX Runtime (the reference: what the FP32 repository serves) and
once with the lesion network as the candidate. Only the 3D lesion network is reduced: it is where
the time goes, and the 2D centerline network decides where the 48 mm crop sits, so it stays FP32
(measured 2026-12-02: BF16 on both networks failed the bar on 2-3 of the 5 real images, BF16 on
the lesion network alone passes on all). Every image runs through the contrast's pipeline whatever
its own contrast, as a user may send it; an image in which the centerline network finds no cord
gets no mask in either run (the centerline is FP32 in both) and the report says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lesionseg.core.paths import user_path
from lesionseg.export.parity import ImageParity, ParityReport, compare_masks
from lesionseg.export.precision import (
    Candidate,
    ParityOptions,
    candidate_predict,
    find_images,
    fp32_predict,
    make_candidate,
    recording,
    runtime_versions,
)

logger = logging.getLogger(__name__)

#: items per network call, as the pipeline model sends them
BATCH = 8


def _rpi(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A NIfTI image as the legacy pipeline model receives it: (x, y, z) float32 RPI, spacing in mm."""
    from lesionseg.client.nifti import load_volume
    from lesionseg.client.orientation import reorientation, sct_to_nib

    volume = load_volume(path)
    orient = reorientation(volume.affine, volume.data.shape, sct_to_nib("RPI"))
    data = np.ascontiguousarray(orient.forward(volume.data), dtype=np.float32)
    return data, tuple(float(s) for s in orient.forward_spacing(volume.spacing))


def _name(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def legacy_report(contrast: str, models: Mapping[str, Any], precision: str, options: ParityOptions,
                  workdir: Path) -> tuple[ParityReport, Candidate]:
    """The parity report of `contrast`'s pipeline with its lesion network at `precision`.

    Args:
        contrast: a legacy contrast ("t2", "t2_ax", "t2s").
        models: FP32 onnx.ModelProto of each network by name (at least the contrast's two).
        precision: "bf16", "int8" or "fp16".
        options: the image folders and the bar.
        workdir: scratch folder for the graphs the runtimes load.
    Returns:
        (report, the lesion network's candidate)
    """
    from lesionseg.server.pipelines.legacy import CONTRASTS, segment_lesions
    from lesionseg.server.pipelines.legacy_centerline import CenterlineError
    from lesionseg.server.repository.legacy import INPUT_NAME, OUTPUT_NAME, networks_of

    options.check(precision)
    assert options.parity_data is not None  # noqa: S101 - check() requires it
    lesion_net, ctr_net = networks_of(contrast)
    params = CONTRASTS[contrast]
    io = {"input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "batch": BATCH}
    ctr = fp32_predict(models[ctr_net], workdir, ctr_net, **io)
    lesion = fp32_predict(models[lesion_net], workdir, lesion_net, **io)

    def run(path: Path, lesion_predict) -> tuple[np.ndarray | None, float]:
        """The pipeline's mask of `path` (None: no cord found) and its voxel volume in mm3."""
        data, spacing = _rpi(path)
        try:
            seg = segment_lesions(data, spacing, params, ctr_predict=ctr, lesion_predict=lesion_predict).seg
        except CenterlineError:
            seg = None
        return seg, float(np.prod(spacing))

    notes = [f"reduced: {lesion_net}; FP32: {ctr_net} (the centerline network places the crop and stays FP32)"]
    calibration: list[np.ndarray] = []
    if precision == "int8":
        folder = options.calibration_data or options.parity_data
        calibration_images = find_images(folder)
        for path in calibration_images:
            run(path, recording(lesion, calibration))
        overlap = {p.resolve() for p in calibration_images} & {p.resolve() for p in find_images(options.parity_data)}
        notes.append(f"calibrated on the lesion network's FP32-pipeline inputs of {len(calibration_images)} images in {folder}"
                     + (f"; {len(overlap)} of them are also images of this report" if overlap else ""))
    candidate = make_candidate(models[lesion_net], precision, input_name=INPUT_NAME, calibration=calibration)
    if candidate.proxy is not None:
        notes.append("FP16 proxy run on the CPU: a GPU run of the TensorRT FP16 engine has to confirm it")
    reduced = candidate_predict(candidate, workdir, **io)

    images: list[ImageParity] = []
    for path in find_images(options.parity_data):
        name = _name(path, options.parity_data)
        reference, voxel_mm3 = run(path, lesion)
        if reference is None:
            notes.append(f"{name}: the {contrast} centerline network finds no cord (FP32 in both runs): no mask to compare")
            continue
        got, _ = run(path, reduced)
        assert got is not None  # noqa: S101 - the centerline network is the same FP32 one
        images.append(compare_masks(name, reference, got, voxel_mm3=voxel_mm3))
        logger.info("%s %s %s: Dice %.4f", contrast, precision, name, images[-1].dice)
    versions = runtime_versions()
    report = ParityReport(precision=precision, runtime=candidate.description,
                          reference=f"onnxruntime {versions['onnxruntime']} FP32, every network", images=images,
                          bar=options.bar, notes=tuple(notes), data=str(user_path(options.parity_data)))
    return report, candidate
