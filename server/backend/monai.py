"""`<task>` for MONAI checkpoints: SCT's contrast-agnostic pipeline, windows sent through BLS."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lesionseg.server.pipelines import monai as monai_seg
from lesionseg.server.backend.base import PythonModel
from lesionseg.server.backend.bls import run_network
from lesionseg.server.backend.validation import check_volume


class MonaiSegModel(PythonModel):
    def setup(self, config: Mapping[str, Any]) -> None:
        self.plan = monai_seg.MonaiPlan.from_json(self.parameters["plan"])

    def predict(self, windows: np.ndarray) -> np.ndarray:
        return run_network(self.plan.network, windows, 2, input_name="input", output_name="logits")

    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        image, spacing = check_volume(inputs["IMAGE"], inputs["SPACING"])
        data, geometry = monai_seg.preprocess(image, spacing, self.plan)
        soft = monai_seg.postprocess(monai_seg.sliding_window(data, self.plan, self.predict), geometry, self.plan)
        return {"SEG": (soft > self.plan.threshold).astype(np.uint8),
                "PROB": np.clip(np.rint(soft * 255), 0, 255).astype(np.uint8)[None]}
