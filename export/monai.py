"""`lesionseg export monai`: SCT 6.5's contrast-agnostic MONAI checkpoint into Triton.

The checkpoint is a PyTorch Lightning `.ckpt` whose `state_dict` holds the network as `net.*`:
a dynamic-network-architectures PlainConvUNet (SCT's `create_nnunet_from_plans`: 3D, 1 input
and 1 output channel, 3x3x3 kernels, strides [1,1,1], [2,2,2] x (n-2), [1,2,2], two convolutions
per stage, InstanceNorm, LeakyReLU). The number of stages and the features per stage are read
from the weights (v2.5: 6 stages, 32..384). The network is exported with a static 64x192x320
window and a dynamic batch; the pipeline model `<task>` runs SCT's MONAI pre/post-processing
(`lesionseg.server.pipelines.monai`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

from lesionseg.core.errors import ExportError, InputError, ModelNotFoundError
from lesionseg.core.files import sha256
from lesionseg.core.paths import user_path
from lesionseg.export.networks import Serving, write_network
from lesionseg.export.torch_onnx import INPUT_NAME, OUTPUT_NAME, load_checkpoint, to_onnx, torch_module
from lesionseg.server.pipelines.monai import MonaiPlan
from lesionseg.server.repository.monai import write_monai_task
from lesionseg.server.repository.networks import NetworkEntry

logger = logging.getLogger(__name__)

_STAGE = re.compile(r"^encoder\.stages\.(\d+)\.0\.convs\.0\.conv\.weight$")


def find_checkpoint(path: Path) -> Path:
    """`path` itself, or the first `*.ckpt` below it (as SCT does)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise InputError(f"{path}: checkpoint or model folder does not exist")
    found = sorted(path.rglob("*.ckpt"))
    if not found:
        raise ModelNotFoundError(f"{path}: no *.ckpt MONAI checkpoint found")
    return found[0]


def load_state_dict(path: Path) -> dict[str, Any]:
    checkpoint = load_checkpoint(path)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return {k.replace("net.", "", 1) if k.startswith("net.") else k: v for k, v in state.items()}


def architecture(state: dict[str, Any]) -> tuple[int, list[int]]:
    """(n_stages, features per stage) read from the encoder's first convolution of each stage."""
    stages = {}
    for key, value in state.items():
        match = _STAGE.match(key)
        if match:
            stages[int(match.group(1))] = int(value.shape[0])
    if not stages or sorted(stages) != list(range(len(stages))):
        raise ExportError("checkpoint does not hold a PlainConvUNet encoder (encoder.stages.N...)")
    return len(stages), [stages[i] for i in range(len(stages))]


def build_network(n_stages: int, features: list[int]) -> Any:
    torch = torch_module()
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    strides = [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 2) + [[1, 2, 2]]
    return PlainConvUNet(
        input_channels=1, n_stages=n_stages, features_per_stage=features, conv_op=torch.nn.Conv3d,
        kernel_sizes=[[3, 3, 3]] * n_stages, strides=strides, n_conv_per_stage=[2] * n_stages, num_classes=1,
        n_conv_per_stage_decoder=[2] * (n_stages - 1), conv_bias=True, norm_op=torch.nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=False,
    ).eval()


@dataclasses.dataclass(frozen=True, kw_only=True)
class MonaiExport:
    task: str
    plan: MonaiPlan
    record: dict[str, Any]


def export_monai(ckpt: Path, repository: Path, *, task: str, serving: Serving | None = None, source: str | None = None) -> MonaiExport:
    (serving or Serving()).require_fp32("MONAI")
    path = user_path(find_checkpoint(ckpt))  # recorded with the model: relative to where it was typed
    state = load_state_dict(path)
    n_stages, features = architecture(state)
    network = build_network(n_stages, features)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise ExportError(f"{path}: weights do not fit SCT's contrast-agnostic PlainConvUNet ({str(exc).splitlines()[0]})") from None
    plan = MonaiPlan(network=f"{task}_net")
    model, diff = to_onnx(network, plan.roi_size, 1)
    entry = NetworkEntry(name=plan.network, input_name=INPUT_NAME, output_names=(OUTPUT_NAME,), input_dims=(1, *plan.roi_size),
                         output_dims=(1, *plan.roi_size), max_batch_size=4, queue_delay_us=5000)
    record = {"source": str(path), "checkpoint_sha256": sha256(path), "stages": n_stages, "features": features,
              "parity": {"reference": "pytorch", "compared": "output on random windows", "max_abs_diff": diff}}
    write_network(entry, model, repository, serving=serving or Serving(), record=record)
    write_monai_task(repository, task, plan, source=source or str(path))
    return MonaiExport(task=task, plan=plan, record=record)
