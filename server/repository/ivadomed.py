"""Repository entry of an ivadomed ensemble task: one Python BLS model `<task>` with the task
interface (`lesionseg.server.repository.task_interface`) running every member and SCT's mean;
its default output is that mean, a soft map. The members are `lesionseg.server.repository.networks`
entries whose ONNX graphs name their tensors `member_input` / `member_output`."""

from __future__ import annotations

from pathlib import Path

from lesionseg.core.interface import Param
from lesionseg.server.backend.ivadomed import IvadomedPipelineModel
from lesionseg.server.pipelines.ivadomed import IvadomedPlan
from lesionseg.server.repository.modelconfig import ModelSpec
from lesionseg.server.repository.task_interface import pipeline_spec, write_pipeline


def ivadomed_spec(task: str, plan: IvadomedPlan, *, input_name: str, output_name: str, source: str = "") -> ModelSpec:
    return pipeline_spec(task, plan_json=plan.to_json(), orientation=plan.orientation, kind="ivadomed", source=source,
                         extra={"member_input": input_name, "member_output": output_name, Param.DEFAULT_OUTPUT: "soft"})


def write_ivadomed_task(repository: Path, task: str, plan: IvadomedPlan, *, input_name: str, output_name: str,
                        source: str = "") -> None:
    write_pipeline(repository, ivadomed_spec(task, plan, input_name=input_name, output_name=output_name, source=source),
                   IvadomedPipelineModel)
