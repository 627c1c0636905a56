"""`deepseg_lesion_<contrast>`: the whole legacy lesion pipeline for one volume per request.

Receives an RPI volume and its spacing, runs `lesionseg.server.pipelines.legacy.segment_lesions`, and
calls the centerline and lesion networks (separate Triton models with dynamic batching) through
BLS: blocks are split into requests of `net_batch` items sent concurrently, so the networks'
batchers can merge work from concurrent pipelines.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from lesionseg.core.interface import Tensor
from lesionseg.core.wire import to_uint8
from lesionseg.server.backend.base import PythonModel, RequestError
from lesionseg.server.backend.bls import run_network
from lesionseg.server.backend.validation import check_volume
from lesionseg.server.pipelines import legacy_centerline as ctr
from lesionseg.server.pipelines.legacy import THRESHOLD, ContrastParams, segment_lesions

logger = logging.getLogger(__name__)


def params_from_config(parameters: Mapping[str, str]) -> ContrastParams:
    return ContrastParams(
        contrast=parameters["contrast"],
        ctr_contrast=parameters["ctr_contrast"],
        landmarks=tuple(float(v) for v in parameters["landmarks"].split(",")),
        mean=float(parameters["zscore_mean"]),
        std=float(parameters["zscore_std"]),
        threshold=float(parameters.get("threshold", THRESHOLD)),
    )


def validate(image: np.ndarray, spacing: np.ndarray, centerline: np.ndarray | None) -> None:
    """Refuse requests the pipeline cannot segment (RequestError with the reason)."""
    check_volume(image, spacing)
    if centerline is not None and centerline.shape != image.shape:
        raise RequestError(f"CENTERLINE shape {list(centerline.shape)} differs from IMAGE shape {list(image.shape)}")


class LegacyPipelineModel(PythonModel):
    optional_inputs = frozenset({Tensor.CENTERLINE})

    def setup(self, config: Mapping[str, Any]) -> None:
        self.params = params_from_config(self.parameters)
        self.ctr_model = self.parameters["ctr_model"]
        self.lesion_model = self.parameters["lesion_model"]
        self.net_batch = int(self.parameters.get("net_batch", "8"))

    def predictor(self, model: str):
        def predict(batch: np.ndarray) -> np.ndarray:
            return run_network(model, batch, self.net_batch)

        return predict

    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        image = inputs[Tensor.IMAGE]
        spacing = inputs[Tensor.SPACING].astype(np.float64)
        centerline = inputs.get(Tensor.CENTERLINE)
        validate(image, spacing, centerline)
        try:
            result = segment_lesions(
                image.astype(np.float32), tuple(spacing), self.params,
                ctr_predict=self.predictor(self.ctr_model), lesion_predict=self.predictor(self.lesion_model),
                centerline_mask=centerline,
            )
        except ctr.CenterlineError as exc:
            raise RequestError(str(exc)) from None
        return {
            Tensor.SEG: result.seg,
            Tensor.PROB: to_uint8(result.prob),
            Tensor.RES_PROB: to_uint8(result.res_prob),
            Tensor.RES_SPACING: np.asarray(result.res_spacing, np.float32),
            Tensor.CENTERLINE_XYZ: result.centerline.coordinates(),
        }
