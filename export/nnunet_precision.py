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

from lesionseg.export.parity import ImageParity, ParityReport, compare_masks
from lesionseg.export.precision import (
    Candidate,
    ParityOptions,
    assemble_report,
    calibration_images,
    candidate_predict,
    find_images,
    fp32_predict,
    make_candidate,
    oriented_image,
    recording,
)
from lesionseg.server.pipelines.nnunet import NnunetPlan

logger = logging.getLogger(__name__)

#: tiles per network call, as the task's predict model sends them
BATCH = 2


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
        data, spacing = oriented_image(path, plan.orientation)
        pre, props = nnunet.preprocess(data, spacing, plan)
        logits = nnunet.sliding_window(pre, plan, lambda t: sum(net(t) for net in nets.values()) / len(nets))
        seg, _ = nnunet.postprocess(logits, props, plan)
        return seg > 0, float(np.prod(spacing))

    notes = [f"reduced: every fold network ({', '.join(plan.networks)}); masks compared: foreground (any label > 0)"]
    calibration: list[np.ndarray] = []
    if precision == "int8":
        paths, described = calibration_images(options)
        first = plan.networks[0]  # every fold sees the same tiles
        for path in paths:
            run(path, {**reference, first: recording(reference[first], calibration)})
        notes.append(f"calibrated on the FP32 sliding window's tiles of {described}")
    candidates = {name: make_candidate(models[name], precision, input_name=input_name, calibration=calibration)
                  for name in plan.networks}
    reduced = {name: candidate_predict(c, workdir / name, **io) for name, c in candidates.items()}

    images: list[ImageParity] = []
    for path in find_images(options.parity_data):
        name = path.relative_to(options.parity_data).as_posix()
        expected, voxel_mm3 = run(path, reference)
        got, _ = run(path, reduced)
        images.append(compare_masks(name, expected, got, voxel_mm3=voxel_mm3))
        logger.info("%s %s: Dice %.4f", precision, name, images[-1].dice)
    report = assemble_report(precision, next(iter(candidates.values())), images, notes, options, reference="every fold network")
    return report, candidates
