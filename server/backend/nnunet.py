"""Python-backend models of an nnU-Net task ensemble; the logic is `lesionseg.server.pipelines.nnunet`."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lesionseg.core.interface import Param, Tensor
from lesionseg.server.backend.base import PythonModel
from lesionseg.server.backend.bls import run_network
from lesionseg.server.backend.validation import check_volume
from lesionseg.server.pipelines import nnunet


class _PlanModel(PythonModel):
    def setup(self, config: Mapping[str, Any]) -> None:
        self.plan = nnunet.NnunetPlan.from_json(self.parameters[Param.PLAN])


class PreprocessModel(_PlanModel):
    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        image, spacing = check_volume(inputs[Tensor.IMAGE], inputs[Tensor.SPACING])
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
        return {Tensor.SEG: seg, Tensor.PROB: prob}
