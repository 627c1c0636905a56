"""Repository entries of sc-crop's cord detector: the `sccrop` Python model
(`lesionseg.server.backend.sccrop`) and its two networks, `sccrop_detector` (YOLO26n, dynamic
height and width, end to end (N, 300, 6)) and `sccrop_classifier` (1 x 3 x 320 x 320 -> (1, 2))."""

from __future__ import annotations

from pathlib import Path

from lesionseg.core.interface import Param, Tensor
from lesionseg.server.backend.sccrop import FACES, SccropModel
from lesionseg.server.pipelines.sccrop import PAD_KEYS
from lesionseg.server.repository.entry import NetworkEntry
from lesionseg.server.repository.modelconfig import ModelSpec, TensorSpec, write_config
from lesionseg.server.repository.pymodel import write_model_py

MODEL, DETECTOR, CLASSIFIER = "sccrop", "sccrop_detector", "sccrop_classifier"
#: the detector's inputs: ultralytics' letterbox of a slab to 320 on its long side, the short side
#: padded to a multiple of the stride, 32 (its GPU variant's TensorRT profile range)
DETECTOR_SMALLEST, DETECTOR_LARGEST = (3, 32, 32), (3, 320, 320)


def network_entries(*, detector_io: tuple[str, str] = ("images", "output0"),
                    classifier_io: tuple[str, str] = ("images", "output0")) -> tuple[NetworkEntry, NetworkEntry]:
    """The detector's and the classifier's entries (the classifier takes no batch axis: its ONNX
    input is fixed at 1 x 3 x 320 x 320)."""
    detector = NetworkEntry(name=DETECTOR, input_name=detector_io[0], output_names=(detector_io[1],), input_dims=(3, -1, -1),
                            output_dims=(300, 6), max_batch_size=8, queue_delay_us=0, instance_count=1,
                            gpu_dims=(DETECTOR_SMALLEST, DETECTOR_LARGEST))
    classifier = NetworkEntry(name=CLASSIFIER, input_name=classifier_io[0], output_names=(classifier_io[1],),
                              input_dims=(1, 3, 320, 320), output_dims=(1, 2), max_batch_size=0, instance_count=1)
    return detector, classifier


def sccrop_spec(*, source: str = "", detector_io: tuple[str, str] = ("images", "output0"),
                classifier_io: tuple[str, str] = ("images", "output0")) -> ModelSpec:
    return ModelSpec(
        name=MODEL, backend="python", instance_count=1,
        inputs=[TensorSpec(name=Tensor.IMAGE, dtype="FP32", dims=(-1, -1, -1)),
                TensorSpec(name=Tensor.AFFINE, dtype="FP64", dims=(4, 4)),
                TensorSpec(name=Tensor.SPACING, dtype="FP32", dims=(3,)),
                TensorSpec(name=Tensor.PADDING, dtype="FP32", dims=(len(PAD_KEYS),))],
        outputs=[TensorSpec(name=Tensor.BOX, dtype="INT64", dims=(len(FACES),))],
        parameters={"detector": DETECTOR, "classifier": CLASSIFIER, "detector_input": detector_io[0],
                    "detector_output": detector_io[1], "classifier_input": classifier_io[0],
                    "classifier_output": classifier_io[1], Param.SOURCE: source},
    )


def write_sccrop(repository: Path, **kwargs: object) -> None:
    """The `sccrop` model's config and model.py (its networks are written by the export)."""
    write_config(sccrop_spec(**kwargs), repository)  # type: ignore[arg-type]
    write_model_py(repository, MODEL, SccropModel)
