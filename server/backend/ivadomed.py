"""`<task>` for ivadomed ensembles: every member's pipeline, patches sent through BLS, SCT's mean."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lesionseg.core.interface import Param, Tensor
from lesionseg.core.wire import to_uint8
from lesionseg.server.backend.base import PythonModel, RequestError
from lesionseg.server.backend.bls import run_network
from lesionseg.server.backend.validation import check_volume
from lesionseg.server.pipelines import ivadomed


class IvadomedPipelineModel(PythonModel):
    def setup(self, config: Mapping[str, Any]) -> None:
        self.plan = ivadomed.IvadomedPlan.from_json(self.parameters[Param.PLAN])
        self.input_name = self.parameters.get("member_input", "input")
        self.output_name = self.parameters.get("member_output", "output")

    def predictor(self, network: str):
        return lambda patches: run_network(network, patches, 4, input_name=self.input_name, output_name=self.output_name)

    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        image, spacing = check_volume(inputs[Tensor.IMAGE], inputs[Tensor.SPACING])
        try:
            mean = ivadomed.ensemble(image, spacing, self.plan, self.predictor)
        except ValueError as exc:  # the volume does not fit the model's patching
            raise RequestError(str(exc)) from None
        return {Tensor.SEG: (mean >= 0.5).astype(np.uint8), Tensor.PROB: to_uint8(mean)[None]}
