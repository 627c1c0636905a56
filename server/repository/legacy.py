"""Repository entries of the legacy family: the `deepseg_lesion_<contrast>` pipeline model clients
call, and the networks it calls (`deepseg_lesion_<contrast>_net`, `deepseg_ctr_<contrast>_net`).

Pipeline outputs, all on RPI grids: SEG (binary, native grid), PROB (soft, native grid) and
RES_PROB (soft, 0.5 mm in-plane grid), soft maps as uint8 (`lesionseg.core.wire`); RES_SPACING;
CENTERLINE_XYZ (voxel coordinates of the cord centre per slice, native grid).

Its constants (landmarks, z-score, threshold, network names, the orientation it expects) are
written into the config's `parameters`, where the server and the client read them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from lesionseg.core.interface import Param, Tensor
from lesionseg.core.catalogue import legacy_model
from lesionseg.server.backend.legacy import LegacyPipelineModel
from lesionseg.server.pipelines.legacy import CONTRASTS, IN_PLANE_MM, THRESHOLD
from lesionseg.server.repository.modelconfig import ModelSpec, TensorSpec, write_config
from lesionseg.server.repository.networks import NetworkEntry, write_network_entry
from lesionseg.server.repository.pymodel import write_model_py

ORIENTATION = "RPI"  # SCT code; nibabel ("L", "A", "S")
#: SCT's network file stem -> its ONNX graph's tensor names (SCT's ONNX releases; our Keras conversion).
INPUT_NAME, OUTPUT_NAME = "input_1", "predictions"
#: centerline networks exported when present even if no lesion pipeline uses them.
EXTRA_CENTERLINE = ("dwi_ctr",)
LESION_DIMS = (1, 48, 48, 48)  # channels-first 48^3 chunk
CTR_DIMS = (80, 80, 1)  # channels-last 80x80 axial block


def networks_of(contrast: str) -> tuple[str, str]:
    """SCT's file stems of the (lesion, centerline) networks of `contrast` (t2_ax uses the t2
    centerline network, as in SCT)."""
    return f"{contrast}_lesion", f"{CONTRASTS[contrast].ctr_contrast}_ctr"


def network_model(network: str) -> str:
    """Triton model name of a network file stem: t2s_lesion -> deepseg_lesion_t2s_net."""
    contrast, kind = network.rsplit("_", 1)
    return f"deepseg_{'ctr' if kind == 'ctr' else 'lesion'}_{contrast}_net"


#: The legacy networks' CPU instances and threads, by measurement (bench/memory.py, bench/tuning.py;
#: the numbers are in bench/README.md, "Server memory"): one instance at two threads instead of
#: the default two at one, which holds a server with every contrast loaded under 1 GB for a few
#: per cent less throughput; each instance is a stub process of its own.
LEGACY_NET_INSTANCES, LEGACY_NET_THREADS = 1, 2


def network_entry(network: str) -> NetworkEntry:
    dims = CTR_DIMS if network.endswith("_ctr") else LESION_DIMS
    return NetworkEntry(name=network_model(network), input_name=INPUT_NAME, output_names=(OUTPUT_NAME,),
                        input_dims=dims, output_dims=dims, max_batch_size=32 if network.endswith("_ctr") else 8,
                        instance_count=LEGACY_NET_INSTANCES, threads=LEGACY_NET_THREADS)


def pipeline_spec(contrast: str) -> ModelSpec:
    params = CONTRASTS[contrast]
    lesion_net, ctr_net = networks_of(contrast)
    return ModelSpec(
        name=legacy_model(contrast),
        backend="python",
        inputs=[
            TensorSpec(name=Tensor.IMAGE, dtype="FP32", dims=(-1, -1, -1)),
            TensorSpec(name=Tensor.SPACING, dtype="FP32", dims=(3,)),
            TensorSpec(name=Tensor.CENTERLINE, dtype="UINT8", dims=(-1, -1, -1), optional=True),
        ],
        outputs=[
            TensorSpec(name=Tensor.SEG, dtype="UINT8", dims=(-1, -1, -1)),
            TensorSpec(name=Tensor.PROB, dtype="UINT8", dims=(-1, -1, -1)),
            TensorSpec(name=Tensor.RES_PROB, dtype="UINT8", dims=(-1, -1, -1)),
            TensorSpec(name=Tensor.RES_SPACING, dtype="FP32", dims=(3,)),
            TensorSpec(name=Tensor.CENTERLINE_XYZ, dtype="FP32", dims=(-1, 3)),
        ],
        instance_count=2,
        parameters={
            "contrast": contrast,
            Param.ORIENTATION: ORIENTATION,
            Param.RESAMPLED: json.dumps([IN_PLANE_MM, IN_PLANE_MM, None]),  # then a cord crop at 0.5 mm: checked by the server
            "ctr_contrast": params.ctr_contrast,
            "ctr_model": network_model(ctr_net),
            "lesion_model": network_model(lesion_net),
            "landmarks": ",".join(repr(float(v)) for v in params.landmarks),
            "zscore_mean": repr(params.mean),
            "zscore_std": repr(params.std),
            "threshold": repr(THRESHOLD),
            "net_batch": "8",
        },
    )


def write_pipeline(repository: Path, contrast: str) -> Path:
    """Write `deepseg_lesion_<contrast>/config.pbtxt` and its thin `1/model.py`."""
    path = write_config(pipeline_spec(contrast), repository)
    write_model_py(repository, legacy_model(contrast), LegacyPipelineModel)
    return path


def write_entries(repository: Path, *, contrasts: Iterable[str] = tuple(CONTRASTS), backend: str = "python") -> None:
    """Write every config and thin model.py of the legacy pipelines, without weights (the
    committed `model_repository/` is this; `lesionseg export sct-legacy` adds the networks' model.onnx)."""
    contrasts = list(contrasts)
    networks = sorted({n for c in contrasts for n in networks_of(c)} | set(EXTRA_CENTERLINE))
    for network in networks:
        write_network_entry(network_entry(network), repository, backend=backend)
    for contrast in contrasts:
        write_pipeline(repository, contrast)
