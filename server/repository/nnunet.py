"""Repository entries of an nnU-Net task: the `<task>` ensemble and its three Python models.

    <task>             ensemble: IMAGE, SPACING, optional TTA and FOLDS -> SEG, PROB
    <task>_preprocess  IMAGE (x, y, z), SPACING -> DATA (C, Z', Y', X'), PROPS, PROPS_SPACING
    <task>_predict     DATA, optional TTA, FOLDS -> LOGITS (BLS sliding window over the `<task>_*net` models)
    <task>_postprocess LOGITS, PROPS, PROPS_SPACING -> SEG (x, y, z) uint8, PROB (C-1, x, y, z) uint8

Every step reads the same `plan` parameter (JSON of `lesionseg.server.pipelines.nnunet.NnunetPlan`); the
ensemble presents the task interface (`lesionseg.server.repository.task_interface`) and carries
`orientation` and the model's `source` for the client.
"""

from __future__ import annotations

import json
from pathlib import Path

from lesionseg.core.interface import Param, Tensor
from lesionseg.server.backend.nnunet import PostprocessModel, PredictModel, PreprocessModel
from lesionseg.server.pipelines.nnunet import NnunetPlan
from lesionseg.server.repository.modelconfig import EnsembleStep, ModelSpec, TensorSpec, write_config
from lesionseg.server.repository.pymodel import write_model_py
from lesionseg.server.repository.task_interface import IMAGE, PROB, SEG, SPACING


def task_specs(task: str, plan: NnunetPlan, *, source: str = "", instances: int = 2,
               crop: dict[str, float] | None = None) -> list[tuple[ModelSpec, type | None]]:
    """The ensemble `<task>` (the task interface) and its three Python models with their classes;
    `crop`: sc-crop's padding in mm, for a model trained on its cord boxes (the ensemble's `crop`
    parameter, JSON: the client crops the image to the detected box first)."""
    params = {Param.PLAN: plan.to_json()}
    data = TensorSpec(name="DATA", dtype="FP32", dims=(-1, -1, -1, -1))
    props = TensorSpec(name="PROPS", dtype="INT64", dims=(12,))
    props_spacing = TensorSpec(name="PROPS_SPACING", dtype="FP64", dims=(3,))
    logits = TensorSpec(name="LOGITS", dtype="FP32", dims=(-1, -1, -1, -1))
    tta = TensorSpec(name=Tensor.TTA, dtype="BOOL", dims=(1,), optional=True)
    folds = TensorSpec(name=Tensor.FOLDS, dtype="INT32", dims=(-1,), optional=True)
    python = {"backend": "python", "instance_count": instances, "parameters": params}
    return [
        (ModelSpec(name=f"{task}_preprocess", inputs=[IMAGE, SPACING], outputs=[data, props, props_spacing], **python),
         PreprocessModel),
        (ModelSpec(name=f"{task}_predict", inputs=[data, tta, folds], outputs=[logits], **python), PredictModel),
        (ModelSpec(name=f"{task}_postprocess", inputs=[logits, props, props_spacing], outputs=[SEG, PROB], **python),
         PostprocessModel),
        (ModelSpec(
            name=task, platform="ensemble", inputs=[IMAGE, SPACING, tta, folds], outputs=[SEG, PROB],
            parameters={Param.ORIENTATION: plan.orientation, Param.PLAN: plan.to_json(), Param.SOURCE: source,
                        Param.RESAMPLED: json.dumps(plan.sent_axes_spacing()),
                        **({Param.CROP: json.dumps(crop, sort_keys=True)} if crop else {})},
            steps=[
                EnsembleStep(model=f"{task}_preprocess", input_map={Tensor.IMAGE: Tensor.IMAGE, Tensor.SPACING: Tensor.SPACING},
                             output_map={"DATA": "data", "PROPS": "props", "PROPS_SPACING": "props_spacing"}),
                EnsembleStep(model=f"{task}_predict", input_map={"DATA": "data", Tensor.TTA: Tensor.TTA, Tensor.FOLDS: Tensor.FOLDS},
                             output_map={"LOGITS": "logits"}),
                EnsembleStep(model=f"{task}_postprocess",
                             input_map={"LOGITS": "logits", "PROPS": "props", "PROPS_SPACING": "props_spacing"},
                             output_map={Tensor.SEG: Tensor.SEG, Tensor.PROB: Tensor.PROB}),
            ],
        ), None),
    ]


def write_task(repository: Path, task: str, plan: NnunetPlan, *, source: str = "", crop: dict[str, float] | None = None) -> None:
    for spec, model_class in task_specs(task, plan, source=source, crop=crop):
        write_config(spec, repository)
        if model_class is None:
            (repository / spec.name / "1").mkdir(parents=True, exist_ok=True)
        else:
            write_model_py(repository, spec.name, model_class)
