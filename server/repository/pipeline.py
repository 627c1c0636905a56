"""Repository entry of a one-model task pipeline (MONAI, ivadomed): one Python BLS model `<task>`.

IMAGE (x, y, z) FP32 in the plan's orientation and SPACING (3,) mm -> SEG (x, y, z) uint8 and
PROB (1, x, y, z) uint8 = round(255 * soft value). Parameters: `plan` (the kind's plan as JSON),
`orientation` (SCT code), `source`, `kind`, and any kind-specific `extra`.
"""

from __future__ import annotations

from pathlib import Path

from lesionseg.server.repository.modelconfig import ModelSpec, TensorSpec, write_config
from lesionseg.server.repository.pymodel import write_model_py


def pipeline_spec(task: str, *, plan_json: str, orientation: str, kind: str, source: str = "",
                  extra: dict[str, str] | None = None) -> ModelSpec:
    return ModelSpec(
        name=task,
        backend="python",
        inputs=[TensorSpec(name="IMAGE", dtype="FP32", dims=(-1, -1, -1)), TensorSpec(name="SPACING", dtype="FP32", dims=(3,))],
        outputs=[TensorSpec(name="SEG", dtype="UINT8", dims=(-1, -1, -1)), TensorSpec(name="PROB", dtype="UINT8", dims=(-1, -1, -1, -1))],
        instance_count=2,
        parameters={"plan": plan_json, "orientation": orientation, "source": source, "kind": kind, **(extra or {})},
    )


def write_pipeline(repository: Path, task: str, spec: ModelSpec, target: str) -> None:
    """Write the config and the thin model.py delegating to `target` ("package.module:Class")."""
    write_config(spec, repository)
    write_model_py(repository, task, target)
