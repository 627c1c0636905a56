"""The tests' own model repository (`tests/model_repository`): the selftest chain.

`python tests/selftest_repo.py` rewrites it; `test_modelconfig.py` checks the committed files
are exactly what these specs generate (golden files).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lesionseg.server.backend.selftest import ScaleModel, SumModel
from lesionseg.server.repository.modelconfig import EnsembleStep, ModelSpec, TensorSpec, write_config
from lesionseg.server.repository.pymodel import write_model_py

REPOSITORY = Path(__file__).parent / "model_repository"

SPECS = [
    ModelSpec(
        name="selftest_scale",
        backend="python",
        inputs=[TensorSpec(name="X", dtype="FP32", dims=(-1,))],
        outputs=[TensorSpec(name="Y", dtype="FP32", dims=(-1,))],
        instance_count=1,
        parameters={"factor": "2.0"},
    ),
    ModelSpec(
        name="selftest_sum",
        backend="python",
        inputs=[TensorSpec(name="Y", dtype="FP32", dims=(-1,))],
        outputs=[TensorSpec(name="TOTAL", dtype="FP32", dims=(1,))],
        instance_count=1,
    ),
    ModelSpec(
        name="selftest",
        platform="ensemble",
        inputs=[TensorSpec(name="X", dtype="FP32", dims=(-1,))],
        outputs=[TensorSpec(name="Y", dtype="FP32", dims=(-1,)), TensorSpec(name="TOTAL", dtype="FP32", dims=(1,))],
        steps=[
            EnsembleStep(model="selftest_scale", input_map={"X": "X"}, output_map={"Y": "Y"}),
            EnsembleStep(model="selftest_sum", input_map={"Y": "Y"}, output_map={"TOTAL": "TOTAL"}),
        ],
    ),
]

PYTHON_MODELS = {"selftest_scale": ScaleModel, "selftest_sum": SumModel}


def write(repository: Path = REPOSITORY) -> Path:
    for spec in SPECS:
        write_config(spec, repository)
        if spec.platform == "ensemble":
            (repository / spec.name / "1").mkdir(parents=True, exist_ok=True)
            (repository / spec.name / "1" / ".gitkeep").touch()
    for name, model_class in PYTHON_MODELS.items():
        write_model_py(repository, name, model_class)
    return repository


if __name__ == "__main__":
    print(write(Path(sys.argv[1]) if len(sys.argv) > 1 else REPOSITORY))
