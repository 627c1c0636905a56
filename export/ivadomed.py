"""`lesionseg export ivadomed`: an ivadomed model or ensemble (SCT 6.0-6.3's MP2RAGE lesion model).

A member is a folder `<name>/` holding `<name>.onnx` and `<name>.json` (ivadomed's rule); an
ensemble is a folder with several members below it (SCT: `seed1/<name>/`, `seed2/<name>/`, ...).
Each member's ONNX file is served as it is (`<task>_member<i>_net`, dynamic batching over its
`length_3D` patches); its JSON config becomes a `MemberPlan`; the pipeline model `<task>` runs
`lesionseg.server.pipelines.ivadomed`. A config this implementation does not reproduce is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lesionseg.core.errors import ExportError, InputError, ModelNotFoundError
from lesionseg.core.files import sha256
from lesionseg.core.paths import user_path
from lesionseg.export.networks import Serving, write_network
from lesionseg.server.pipelines.ivadomed import IvadomedPlan, MemberPlan, UnsupportedConfig
from lesionseg.server.repository.ivadomed import write_ivadomed_task
from lesionseg.server.repository.networks import NetworkEntry

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class IvadomedExport:
    task: str
    plan: IvadomedPlan
    members: tuple[Path, ...]


def find_members(model_dir: Path) -> list[Path]:
    """Every folder at or below `model_dir` holding `<folder>.onnx` and `<folder>.json`, sorted."""
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: ivadomed model folder does not exist")
    candidates = [model_dir, *sorted(p for p in model_dir.rglob("*") if p.is_dir())]
    members = [p for p in candidates if (p / f"{p.name}.onnx").is_file() and (p / f"{p.name}.json").is_file()]
    if not members:
        raise ModelNotFoundError(f"{model_dir}: no ivadomed model (a folder NAME holding NAME.onnx and NAME.json)")
    return members


def _load_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable ivadomed config ({exc})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: not an ivadomed config (a JSON object)")
    return config


def check_member(onnx_path: Path, plan: MemberPlan) -> tuple[Any, str, str, float]:
    """Load the member's ONNX, check it maps a (N, 1, *length) patch to the same shape in [0, 1];
    returns (model, input name, output name, max output deviation from [0, 1])."""
    import onnx
    import onnxruntime as ort

    try:
        model = onnx.load(str(onnx_path))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnx/onnxruntime raise many types for a bad file
        raise InputError(f"{onnx_path}: not a usable ONNX network ({str(exc).splitlines()[0]})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ExportError(f"{onnx_path}: expected one input, found {[i.name for i in inputs]}")
    patch = np.random.default_rng(0).normal(size=(2, 1, *plan.length)).astype(np.float32)
    try:
        out = session.run([outputs[0].name], {inputs[0].name: patch})[0]
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{onnx_path}: does not run on {list(patch.shape)} patches ({str(exc).splitlines()[0]})") from None
    if out.shape != patch.shape:
        raise ExportError(f"{onnx_path}: output shape {list(out.shape)} for input {list(patch.shape)} (one-class 3D model expected)")
    deviation = float(max(0.0, -out.min(), out.max() - 1.0))
    if deviation > 1e-5:
        raise ExportError(f"{onnx_path}: outputs outside [0, 1] (a sigmoid output is expected)")
    return model, inputs[0].name, outputs[0].name, deviation


def export_ivadomed(model_dir: Path | Sequence[Path], repository: Path, *, task: str, serving: Serving | None = None,
                    source: str | None = None) -> IvadomedExport:
    """Export the members found in `model_dir` (or in each of several folders: an ensemble
    released as one zip per member) as the task `task`."""
    (serving or Serving()).require_fp32("ivadomed")
    folders = [Path(model_dir)] if isinstance(model_dir, (str, Path)) else [Path(p) for p in model_dir]
    members = [user_path(m) for folder in folders for m in find_members(folder)]  # recorded: absolute
    model_dir = user_path(folders[0] if len(folders) == 1 else folders[0].parent)
    plans, checked = [], []
    for i, folder in enumerate(members):
        config_path = folder / f"{folder.name}.json"
        try:
            plan = MemberPlan.from_config(_load_config(config_path), f"{task}_member{i}_net")
        except UnsupportedConfig as exc:
            raise ExportError(f"{config_path}: not supported: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{config_path}: malformed ivadomed config ({exc!r})") from None
        plans.append(plan)
        checked.append(check_member(folder / f"{folder.name}.onnx", plan))
    names = {(c[1], c[2]) for c in checked}
    if len(names) != 1:
        raise ExportError(f"{model_dir}: members name their tensors differently ({sorted(names)})")
    input_name, output_name = names.pop()
    for folder, plan, (model, *_rest) in zip(members, plans, checked):
        entry = NetworkEntry(name=plan.network, input_name=input_name, output_names=(output_name,),
                             input_dims=(1, *plan.length), output_dims=(1, *plan.length), max_batch_size=16, queue_delay_us=2000)
        record = {"source": str(folder), "onnx_source_sha256": sha256(folder / f"{folder.name}.onnx"),
                  "parity": {"reference": "the member's own ONNX file", "compared": "served unchanged", "max_abs_diff": 0.0}}
        write_network(entry, model, repository, serving=serving or Serving(), record=record)
    plan = IvadomedPlan(members=tuple(plans))
    write_ivadomed_task(repository, task, plan, input_name=input_name, output_name=output_name, source=source or str(model_dir))
    logger.info("%s: %d ivadomed members from %s", task, len(members), model_dir)
    return IvadomedExport(task=task, plan=plan, members=tuple(members))
