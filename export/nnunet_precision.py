"""Parity reports of an nnU-Net task at a reduced precision.

The report runs the task's own pipeline code in process (`preprocess`, `sliding_window` over the
fold networks, `postprocess`) on every real image, once with every fold network in FP32 on ONNX
Runtime (the reference) and once with every fold network as the candidate, and compares the
foreground masks (any label > 0). INT8 calibrates on the tiles the FP32 sliding window feeds the
networks. Here the networks are whatever the export was given: with the synthetic-plans models of
the tests (random weights), many voxels sit near the decision boundary, which makes the bar
harder to meet than real weights would.
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
from lesionseg.server.pipelines.nnunet import NnunetPlan

logger = logging.getLogger(__name__)

#: tiles per network call, as the task's predict model sends them
BATCH = 2


def _oriented(path: Path, orientation: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """A NIfTI image as the task model receives it: (x, y, z) float32 in the plan's orientation, spacing in mm."""
    from lesionseg.client.nifti import load_volume
    from lesionseg.client.orientation import reorientation, sct_to_nib

    volume = load_volume(path)
    orient = reorientation(volume.affine, volume.data.shape, sct_to_nib(orientation))
    data = np.ascontiguousarray(orient.forward(volume.data), dtype=np.float32)
    return data, tuple(float(s) for s in orient.forward_spacing(volume.spacing))


def nnunet_report(plan: NnunetPlan, models: Mapping[str, Any], precision: str, options: ParityOptions, workdir: Path,
                  *, input_name: str, output_name: str) -> tuple[ParityReport, dict[str, Candidate]]:
    """The parity report of the task `plan` describes with every fold network at `precision`.

    Args:
        plan: the task's plan (its `networks` name the fold networks, keys of `models`).
        models: FP32 onnx.ModelProto of each fold network.
        precision: "bf16", "int8" or "fp16".
        options: the image folders and the bar.
        workdir: scratch folder for the graphs the runtimes load.
    Returns:
        (report, each fold network's candidate)
    """
    from lesionseg.server.pipelines import nnunet

    options.check(precision)
    assert options.parity_data is not None  # noqa: S101 - check() requires it
    io = {"input_name": input_name, "output_name": output_name, "batch": BATCH}
    reference = {name: fp32_predict(models[name], workdir, name, **io) for name in plan.networks}

    def run(path: Path, nets: Mapping[str, Any]) -> tuple[np.ndarray, float]:
        """The foreground mask of `path` with `nets` and its voxel volume in mm3."""
        data, spacing = _oriented(path, plan.orientation)
        pre, props = nnunet.preprocess(data, spacing, plan)
        logits = nnunet.sliding_window(pre, plan, lambda t: sum(net(t) for net in nets.values()) / len(nets))
        seg, _ = nnunet.postprocess(logits, props, plan)
        return seg > 0, float(np.prod(spacing))

    notes = [f"reduced: every fold network ({', '.join(plan.networks)}); masks compared: foreground (any label > 0)"]
    calibration: list[np.ndarray] = []
    if precision == "int8":
        folder = options.calibration_data or options.parity_data
        calibration_images = find_images(folder)
        first = plan.networks[0]
        for path in calibration_images:
            run(path, {**reference, first: recording(reference[first], calibration)})
        overlap = {p.resolve() for p in calibration_images} & {p.resolve() for p in find_images(options.parity_data)}
        notes.append(f"calibrated on the FP32 sliding window's tiles of {len(calibration_images)} images in {folder}"
                     + (f"; {len(overlap)} of them are also images of this report" if overlap else ""))
    candidates = {name: make_candidate(models[name], precision, input_name=input_name, calibration=calibration)
                  for name in plan.networks}
    if any(c.proxy is not None for c in candidates.values()):
        notes.append("FP16 proxy run on the CPU: a GPU run of the TensorRT FP16 engine has to confirm it")
    reduced = {name: candidate_predict(c, workdir / name, **io) for name, c in candidates.items()}

    images: list[ImageParity] = []
    for path in find_images(options.parity_data):
        name = path.relative_to(options.parity_data).as_posix()
        expected, voxel_mm3 = run(path, reference)
        got, _ = run(path, reduced)
        images.append(compare_masks(name, expected, got, voxel_mm3=voxel_mm3))
        logger.info("%s %s: Dice %.4f", precision, name, images[-1].dice)
    versions = runtime_versions()
    first = next(iter(candidates.values()))
    report = ParityReport(precision=precision, runtime=first.description,
                          reference=f"onnxruntime {versions['onnxruntime']} FP32, every fold network", images=images,
                          bar=options.bar, notes=tuple(notes), data=str(user_path(options.parity_data)))
    return report, candidates
