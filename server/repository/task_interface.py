"""The interface every sct_deepseg task model presents to the client, whatever its family:

    IMAGE (x, y, z) FP32 in the model's orientation, SPACING (3,) mm
        -> SEG (x, y, z) uint8 labels, PROB (C - 1, x, y, z) uint8 foreground probabilities

(soft values as uint8, `lesionseg.core.wire`). Its config parameters carry `plan` (the family's
plan as JSON, with the label names), `orientation` (SCT's code) and `source`. An nnU-Net task is
an ensemble with this interface (`lesionseg.server.repository.nnunet`); MONAI and ivadomed tasks
are one Python BLS model each (`pipeline_spec`).
"""

from __future__ import annotations

from pathlib import Path

from lesionseg.core.interface import Param, Tensor
from lesionseg.server.repository.modelconfig import ModelSpec, TensorSpec, write_config
from lesionseg.server.repository.pymodel import write_model_py

IMAGE = TensorSpec(name=Tensor.IMAGE, dtype="FP32", dims=(-1, -1, -1))
SPACING = TensorSpec(name=Tensor.SPACING, dtype="FP32", dims=(3,))
SEG = TensorSpec(name=Tensor.SEG, dtype="UINT8", dims=(-1, -1, -1))
PROB = TensorSpec(name=Tensor.PROB, dtype="UINT8", dims=(-1, -1, -1, -1))


def pipeline_spec(task: str, *, plan_json: str, orientation: str, kind: str, source: str = "",
                  extra: dict[str, str] | None = None) -> ModelSpec:
    """A one-model task pipeline (`kind` monai or ivadomed) with any kind-specific `extra` parameters."""
    return ModelSpec(
        name=task,
        backend="python",
        inputs=[IMAGE, SPACING],
        outputs=[SEG, PROB],
        instance_count=2,
        parameters={Param.PLAN: plan_json, Param.ORIENTATION: orientation, Param.SOURCE: source, "kind": kind, **(extra or {})},
    )


def write_pipeline(repository: Path, spec: ModelSpec, model_class: type) -> None:
    """Write the config and the thin model.py delegating to `model_class`."""
    write_config(spec, repository)
    write_model_py(repository, spec.name, model_class)
