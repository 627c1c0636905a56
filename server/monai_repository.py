"""Repository entry of a MONAI (contrast-agnostic) task: one Python BLS model `<task>`.

IMAGE (x, y, z) in the plan's orientation, SPACING -> SEG (soft > threshold, uint8) and PROB
(1, x, y, z) soft map as uint8 = round(255 * value). Parameters: `plan` (JSON of
`lesionseg.server.monai_seg.MonaiPlan`), `orientation`, `source`.
"""

from __future__ import annotations

from pathlib import Path

from lesionseg.server.modelconfig import ModelSpec, TensorSpec, write_config
from lesionseg.server.monai_seg import MonaiPlan
from lesionseg.server.pymodel import write_model_py


def monai_spec(task: str, plan: MonaiPlan, *, source: str = "") -> ModelSpec:
    return ModelSpec(
        name=task,
        backend="python",
        inputs=[TensorSpec(name="IMAGE", dtype="FP32", dims=(-1, -1, -1)), TensorSpec(name="SPACING", dtype="FP32", dims=(3,))],
        outputs=[TensorSpec(name="SEG", dtype="UINT8", dims=(-1, -1, -1)), TensorSpec(name="PROB", dtype="UINT8", dims=(-1, -1, -1, -1))],
        instance_count=2,
        parameters={"plan": plan.to_json(), "orientation": plan.orientation, "source": source, "kind": "monai"},
    )


def write_monai_task(repository: Path, task: str, plan: MonaiPlan, *, source: str = "") -> None:
    write_config(monai_spec(task, plan, source=source), repository)
    write_model_py(repository, task, "lesionseg.server.backend.monai_model:MonaiSegModel")
