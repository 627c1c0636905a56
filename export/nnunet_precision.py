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

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lesionseg.core.enums import Precision
from lesionseg.export import precision as reduced
from lesionseg.export.parity import ParityReport
from lesionseg.server.pipelines.nnunet import NnunetPlan

#: tiles per network call, as the task's predict model sends them
BATCH = 2


def nnunet_report(plan: NnunetPlan, models: Mapping[str, Any], precision: str, options: reduced.ParityOptions, workdir: Path,
                  *, input_name: str, output_name: str) -> tuple[ParityReport, dict[str, reduced.Candidate]]:
    """The parity report of the task `plan` describes with every fold network at `precision`, and
    each fold network's candidate. `models` holds the FP32 onnx.ModelProto of each fold network
    (`plan.networks` names them); `precision`, `options` and `workdir` are as
    `lesionseg.export.legacy_precision.legacy_report` takes them."""
    from lesionseg.server.pipelines import nnunet

    options.check(precision)
    io = {"input_name": input_name, "output_name": output_name, "batch": BATCH}
    reference = {name: reduced.fp32_predict(models[name], workdir, name, **io) for name in plan.networks}

    def run(path: Path, nets: Mapping[str, Any]) -> tuple[np.ndarray, float]:
        """The foreground mask of `path` with `nets` and its voxel volume in mm3."""
        data, spacing = reduced.oriented_image(path, plan.orientation)
        pre, props = nnunet.preprocess(data, spacing, plan)
        logits = nnunet.sliding_window(pre, plan, nnunet.predict_folds(plan, [nets[name] for name in plan.networks]))
        seg, _ = nnunet.postprocess(logits, props, plan)
        return seg > 0, float(np.prod(spacing))

    notes = [f"reduced: every fold network ({', '.join(plan.networks)}); masks compared: foreground (any label > 0)"]
    calibration: list[np.ndarray] = []
    if precision == Precision.INT8:
        paths, described = reduced.calibration_images(options)
        first = plan.networks[0]  # every fold sees the same tiles
        for path in paths:
            run(path, {**reference, first: reduced.recording(reference[first], calibration)})
        notes.append(f"calibrated on the FP32 sliding window's tiles of {described}")
    candidates = {name: reduced.make_candidate(models[name], precision, input_name=input_name, calibration=calibration)
                  for name in plan.networks}
    nets = {name: reduced.candidate_predict(c, workdir / name, **io) for name, c in candidates.items()}

    def masks(path: Path):
        expected, voxel_mm3 = run(path, reference)
        return expected, run(path, nets)[0], voxel_mm3

    images, skipped = reduced.compare_images(options, masks, label=str(precision))
    report = reduced.assemble_report(precision, next(iter(candidates.values())), images, [*notes, *skipped], options,
                                     reference="every fold network")
    return report, candidates
