"""`<task>` for MONAI checkpoints: SCT's contrast-agnostic pipeline, windows sent through BLS."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lesionseg.core.interface import Param, Tensor
from lesionseg.core.wire import to_uint8
from lesionseg.server.backend.base import PythonModel
from lesionseg.server.backend.bls import run_network
from lesionseg.server.backend.validation import check_volume
from lesionseg.server.pipelines import monai


class MonaiPipelineModel(PythonModel):
    def setup(self, config: Mapping[str, Any]) -> None:
        self.plan = monai.MonaiPlan.from_json(self.parameters[Param.PLAN])

    def predict(self, windows: np.ndarray) -> np.ndarray:
        return run_network(self.plan.network, windows, 2, input_name="input", output_name="logits")

    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        image, spacing = check_volume(inputs[Tensor.IMAGE], inputs[Tensor.SPACING])
        data, geometry = monai.preprocess(image, spacing, self.plan)
        soft = monai.postprocess(monai.sliding_window(data, self.plan, self.predict), geometry, self.plan)
        return {Tensor.SEG: (soft > self.plan.threshold).astype(np.uint8),
                Tensor.PROB: to_uint8(soft)[None]}
