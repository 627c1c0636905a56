"""Repository entries of the legacy pipeline: `deepseg_lesion_<contrast>`, the model clients call.

Outputs, all on RPI grids: SEG (binary, native grid), PROB (soft, native grid) and RES_PROB (soft,
0.5 mm in-plane grid), soft maps as uint8 = round(255 * value); RES_SPACING; CENTERLINE_XYZ
(voxel coordinates of the cord centre per slice, native grid).

Its constants (landmarks, z-score, threshold, network names, the orientation it expects) are
written into the config's `parameters`, where the server and the client read them.
"""

from __future__ import annotations

from pathlib import Path

from lesionseg.server.pipelines.legacy import CONTRASTS, THRESHOLD
from lesionseg.server.repository.modelconfig import ModelSpec, TensorSpec, write_config
from lesionseg.server.repository.pymodel import write_model_py

PIPELINE_MODEL = "lesionseg.server.backend.legacy:DeepsegLesionModel"
ORIENTATION = "RPI"  # SCT code; nibabel ("L", "A", "S")


def pipeline_name(contrast: str) -> str:
    return f"deepseg_lesion_{contrast}"


def pipeline_spec(contrast: str) -> ModelSpec:
    params = CONTRASTS[contrast]
    return ModelSpec(
        name=pipeline_name(contrast),
        backend="python",
        inputs=[
            TensorSpec(name="IMAGE", dtype="FP32", dims=(-1, -1, -1)),
            TensorSpec(name="SPACING", dtype="FP32", dims=(3,)),
            TensorSpec(name="CENTERLINE", dtype="UINT8", dims=(-1, -1, -1), optional=True),
        ],
        outputs=[
            TensorSpec(name="SEG", dtype="UINT8", dims=(-1, -1, -1)),
            TensorSpec(name="PROB", dtype="UINT8", dims=(-1, -1, -1)),
            TensorSpec(name="RES_PROB", dtype="UINT8", dims=(-1, -1, -1)),
            TensorSpec(name="RES_SPACING", dtype="FP32", dims=(3,)),
            TensorSpec(name="CENTERLINE_XYZ", dtype="FP32", dims=(-1, 3)),
        ],
        instance_count=2,
        parameters={
            "contrast": contrast,
            "orientation": ORIENTATION,
            "ctr_contrast": params.ctr_contrast,
            "ctr_model": f"deepseg_ctr_{params.ctr_contrast}_net",
            "lesion_model": f"deepseg_lesion_{contrast}_net",
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
    write_model_py(repository, pipeline_name(contrast), PIPELINE_MODEL)
    return path
