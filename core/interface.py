"""What a served segmentation model and its clients agree on: tensor names, the parameters of its
config, and `ModelInfo`, the one parsed view a client keeps of a served model.

Two interfaces are served (the server's repository writes them, `lesionseg.server.repository`):

- a legacy pipeline `deepseg_lesion_<contrast>`: IMAGE (x, y, z) FP32 in the model's orientation,
  SPACING (3,) mm, optional CENTERLINE (x, y, z) uint8 -> SEG (x, y, z) uint8 (the lesion mask,
  thresholded on the server), PROB and RES_PROB (soft maps as uint8, `lesionseg.core.wire`),
  RES_SPACING, CENTERLINE_XYZ (one (x, y, z) voxel position per slice);
- an sct_deepseg task (nnU-Net ensemble, MONAI or ivadomed pipeline): IMAGE, SPACING -> SEG
  (x, y, z) uint8 labels, PROB (C - 1, x, y, z) uint8 foreground probabilities; its `plan`
  parameter (JSON) names the labels. An nnU-Net task also takes two optional inputs: TTA (1,)
  BOOL, nnU-Net's test-time mirroring on or off (default: as exported), and FOLDS (n,) INT32, the
  positions of the folds to use among the plan's `folds` (default: all);
- sc-crop's cord detector `sccrop`: IMAGE (x, y, z) FP32 as stored, AFFINE (4, 4) FP64, PADDING
  (6,) FP32 mm -> BOX (6,) INT64, the inclusive voxel box (xmin, xmax, ymin, ymax, zmin, zmax).

Every model's parameters carry `orientation` (SCT's code, e.g. "RPI": the orientation IMAGE must
be sent in) and `source` (where its weights came from).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

from lesionseg.core.enums import StrEnum


class Tensor(StrEnum):
    """Input and output names of the served models."""

    IMAGE = "IMAGE"
    SPACING = "SPACING"
    CENTERLINE = "CENTERLINE"
    SEG = "SEG"
    PROB = "PROB"
    RES_PROB = "RES_PROB"
    RES_SPACING = "RES_SPACING"
    CENTERLINE_XYZ = "CENTERLINE_XYZ"
    TTA = "TTA"
    FOLDS = "FOLDS"
    AFFINE = "AFFINE"
    PADDING = "PADDING"
    BOX = "BOX"


class Param(StrEnum):
    """Config parameters a client reads."""

    ORIENTATION, SOURCE, PLAN, DEFAULT_OUTPUT = "orientation", "source", "plan", "default_output"
    CROP = "crop"  # a task model trained on sc-crop's cord boxes: its padding in mm (JSON)
    #: the spacing (mm) the model first resamples each axis of IMAGE (as sent) to, null for an axis
    #: it keeps (JSON list of 3): the client checks the work an image asks for before sending it
    RESAMPLED = "resampled_spacing"


#: sc-crop's margins (mm) as a cropped model's crop_metadata.json names them, in the order of the
#: `sccrop` model's PADDING
CROP_PAD_KEYS = ("pad_superior", "pad_inferior", "pad_left", "pad_right", "pad_anterior", "pad_posterior")


def single_fold_position(folds: Sequence[str]) -> int:
    """SCT's `-single-fold` (`create_nnunet_from_plans`): the position of fold "1" among an nnU-Net
    task's `folds` when there is one, else the first fold's."""
    return list(folds).index("1") if "1" in folds else 0


class ModelKind(StrEnum):
    LEGACY = "legacy"  # a sct_deepseg_lesion pipeline
    TASK = "task"  # an sct_deepseg task: labels and class probabilities


#: the orientation IMAGE is sent in when a model's config names none (SCT's codes): the legacy
#: pipelines work in RPI, SCT feeds nnU-Net models LPI
DEFAULT_ORIENTATION = {ModelKind.LEGACY: "RPI", ModelKind.TASK: "LPI"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """A served model as a client needs it, parsed once from its config.

    `labels` (name -> value, background included) is empty for a legacy pipeline;
    `soft_by_default`: the task's default output is its soft map (an ivadomed ensemble's mean).
    """

    name: str
    kind: ModelKind
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    orientation: str
    labels: dict[str, int]
    source: str
    soft_by_default: bool
    parameters: dict[str, str]

    @property
    def plan(self) -> dict[str, Any]:
        """The model's plan parameter (JSON; empty for a model without one)."""
        return json.loads(self.parameters.get(Param.PLAN) or "{}")

    @property
    def crop_padding(self) -> dict[str, float] | None:
        """sc-crop's padding (mm by face key, e.g. pad_superior) of a model that runs on its cord box."""
        raw = self.parameters.get(Param.CROP)
        return {str(k): float(v) for k, v in json.loads(raw).items()} if raw else None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ModelInfo":
        """Parse a model config as Triton returns it in JSON (`get_model_config(..., as_json=True)["config"]`)."""
        parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        inputs = tuple(t["name"] for t in config.get("input", []))
        labels = dict(json.loads(parameters.get(Param.PLAN, "{}") or "{}").get("labels") or {})
        kind = ModelKind.LEGACY if Tensor.CENTERLINE in inputs or not labels else ModelKind.TASK
        return cls(
            name=str(config.get("name", "")),
            kind=kind,
            inputs=inputs,
            outputs=tuple(t["name"] for t in config.get("output", [])),
            orientation=parameters.get(Param.ORIENTATION) or DEFAULT_ORIENTATION[kind],
            labels=labels,
            source=parameters.get(Param.SOURCE, ""),
            soft_by_default=parameters.get(Param.DEFAULT_OUTPUT) == "soft",
            parameters=parameters,
        )

    @property
    def resampled_spacing(self) -> tuple[float | None, ...] | None:
        """The model's `resampled_spacing` parameter (mm per axis of IMAGE as sent, None: kept), or
        None when its config gives none."""
        raw = self.parameters.get(Param.RESAMPLED)
        return tuple(None if v is None else float(v) for v in json.loads(raw)) if raw else None

    @property
    def foreground(self) -> dict[str, int]:
        """The labels other than background (value 0), by value (a region-based model: by head)."""
        return {name: value for name, value in sorted(self.labels.items(), key=lambda kv: kv[1]) if value != 0}

    def mask_values(self, name: str) -> tuple[int, ...]:
        """The SEG values of class `name`'s mask: its own value, or for a region-based model the
        values dataset.json gives it (SCT ORs them: `sc: [1, 2]` holds the lesion too)."""
        regions = self.plan.get("label_values") or {}
        return tuple(int(v) for v in regions[name]) if name in regions else (self.labels[name],)
