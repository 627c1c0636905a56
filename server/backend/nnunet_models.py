"""Python-backend models of an nnU-Net task ensemble; the logic is `lesionseg.server.nnunet`."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lesionseg.server import nnunet
from lesionseg.server.backend.base import PythonModel, RequestError
from lesionseg.server.backend.bls import run_network

MAX_VOXELS = 512 * 512 * 1024


class _PlanModel(PythonModel):
    def setup(self, config: Mapping[str, Any]) -> None:
        self.plan = nnunet.NnunetPlan.from_json(self.parameters["plan"])


class PreprocessModel(_PlanModel):
    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        image, spacing = inputs["IMAGE"], inputs["SPACING"].astype(np.float64)
        if image.ndim != 3 or min(image.shape) < 1 or image.size > MAX_VOXELS:
            raise RequestError(f"IMAGE must be a 3D volume of at most {MAX_VOXELS} voxels, got shape {list(image.shape)}")
        if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise RequestError(f"SPACING must be 3 positive finite numbers, got {spacing.tolist()}")
        if not np.all(np.isfinite(image)):
            raise RequestError("IMAGE contains NaN or infinite values")
        if not np.any(image):
            raise RequestError("IMAGE is all zero")
        data, props = nnunet.preprocess(image, spacing, self.plan)
        ints, props_spacing = props.pack()
        return {"DATA": data, "PROPS": ints, "PROPS_SPACING": props_spacing}


class PredictModel(_PlanModel):
    def setup(self, config: Mapping[str, Any]) -> None:
        super().setup(config)
        self.per_request = int(self.parameters.get("tiles_per_request", "2"))

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """Average over the fold networks of their logits on `tiles`."""
        total = None
        for network in self.plan.networks:
            out = run_network(network, tiles, self.per_request, input_name="input", output_name="logits")
            total = out if total is None else total + out
        return total / len(self.plan.networks)

    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {"LOGITS": nnunet.sliding_window(inputs["DATA"], self.plan, self.predict)}


class PostprocessModel(_PlanModel):
    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        props = nnunet.Properties.unpack(inputs["PROPS"], inputs["PROPS_SPACING"])
        seg, prob = nnunet.postprocess(inputs["LOGITS"], props, self.plan, probabilities=True)
        return {"SEG": seg, "PROB": prob}
