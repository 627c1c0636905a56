"""Repository entry of a MONAI (contrast-agnostic) task: one Python BLS model `<task>` with the
task interface (`lesionseg.server.repository.task_interface`; SEG is the soft map > the plan's
threshold). Its network is a `lesionseg.server.repository.networks` entry."""

from __future__ import annotations

import json
from pathlib import Path

from lesionseg.core.interface import Param
from lesionseg.server.backend.monai import MonaiPipelineModel
from lesionseg.server.pipelines.monai import MonaiPlan
from lesionseg.server.repository.modelconfig import ModelSpec
from lesionseg.server.repository.task_interface import pipeline_spec, write_pipeline


def monai_spec(task: str, plan: MonaiPlan, *, source: str = "") -> ModelSpec:
    return pipeline_spec(task, plan_json=plan.to_json(), orientation=plan.orientation, kind="monai", source=source,
                         extra={Param.RESAMPLED: json.dumps(list(plan.pixdim))})


def write_monai_task(repository: Path, task: str, plan: MonaiPlan, *, source: str = "") -> None:
    write_pipeline(repository, monai_spec(task, plan, source=source), MonaiPipelineModel)
