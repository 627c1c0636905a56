"""Parity reports of the legacy pipelines at a reduced precision.

The report runs the pipeline's own code in process (`segment_lesions`) on every real image, once
with every network in FP32 on ONNX Runtime (the reference: what the FP32 repository serves) and
once with the lesion network as the candidate. Only the 3D lesion network is reduced: it is where
the time goes, and the 2D centerline network decides where the 48 mm crop sits, so it stays FP32
(BF16 on both networks failed the bar on some of the real images where BF16 on the lesion network
alone passed on all: bench/README.md, "Reduced precision"). Every image runs through the contrast's pipeline whatever
its own contrast, as a user may send it; an image in which the centerline network finds no cord
gets no mask in either run (the centerline is FP32 in both) and the report says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lesionseg.core.enums import Precision
from lesionseg.export import precision as reduced
from lesionseg.export.parity import ParityReport

#: items per network call, as the pipeline model sends them
BATCH = 8


def legacy_report(contrast: str, models: Mapping[str, Any], precision: str, options: reduced.ParityOptions,
                  workdir: Path) -> tuple[ParityReport, reduced.Candidate]:
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
    lesion_net, ctr_net = networks_of(contrast)
    params = CONTRASTS[contrast]
    io = {"input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "batch": BATCH}
    ctr = reduced.fp32_predict(models[ctr_net], workdir, ctr_net, **io)
    lesion = reduced.fp32_predict(models[lesion_net], workdir, lesion_net, **io)

    def run(path: Path, lesion_predict) -> tuple[np.ndarray | None, float]:
        """The pipeline's mask of `path` (None: no cord found) and its voxel volume in mm3."""
        data, spacing = reduced.oriented_image(path, "RPI")
        try:
            seg = segment_lesions(data, spacing, params, ctr_predict=ctr, lesion_predict=lesion_predict).seg
        except CenterlineError:
            seg = None
        return seg, float(np.prod(spacing))

    notes = [f"reduced: {lesion_net}; FP32: {ctr_net} (the centerline network places the crop and stays FP32)"]
    calibration: list[np.ndarray] = []
    if precision == Precision.INT8:
        paths, described = reduced.calibration_images(options)
        for path in paths:
            run(path, reduced.recording(lesion, calibration))
        notes.append(f"calibrated on the lesion network's FP32-pipeline inputs of {described}")
    candidate = reduced.make_candidate(models[lesion_net], precision, input_name=INPUT_NAME, calibration=calibration)
    reduced_lesion = reduced.candidate_predict(candidate, workdir, **io)

    def masks(path: Path):
        expected, voxel_mm3 = run(path, lesion)
        if expected is None:  # the centerline network is FP32 in both runs
            return f"the {contrast} centerline network finds no cord (FP32 in both runs): no mask to compare"
        return expected, run(path, reduced_lesion)[0], voxel_mm3

    images, skipped = reduced.compare_images(options, masks, label=f"{contrast} {precision}")
    report = reduced.assemble_report(precision, candidate, images, [*notes, *skipped], options, reference="every network")
    return report, candidate
