"""Repository entry of a MONAI (contrast-agnostic) task: one Python BLS model `<task>`
(`lesionseg.server.repository.pipeline`; SEG is the soft map > the plan's threshold)."""

from __future__ import annotations

from pathlib import Path

from lesionseg.server.repository.modelconfig import ModelSpec
from lesionseg.server.pipelines.monai import MonaiPlan
from lesionseg.server.repository.pipeline import pipeline_spec, write_pipeline


def monai_spec(task: str, plan: MonaiPlan, *, source: str = "") -> ModelSpec:
    return pipeline_spec(task, plan_json=plan.to_json(), orientation=plan.orientation, kind="monai", source=source)


def write_monai_task(repository: Path, task: str, plan: MonaiPlan, *, source: str = "") -> None:
    write_pipeline(repository, task, monai_spec(task, plan, source=source), "lesionseg.server.backend.monai:MonaiSegModel")
