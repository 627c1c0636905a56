"""Python-backend models of an nnU-Net task ensemble; the logic is `lesionseg.server.pipelines.nnunet`."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lesionseg.core.interface import Param, Tensor
from lesionseg.server.backend.base import PythonModel, RequestError
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
    """DATA (and the task's optional TTA and FOLDS) -> LOGITS: the folds combined as the plan says,
    or, for a vote, every chosen fold's logits stacked fold-major."""

    optional_inputs = frozenset({Tensor.TTA, Tensor.FOLDS})

    def setup(self, config: Mapping[str, Any]) -> None:
        super().setup(config)
        self.per_request = int(self.parameters.get("tiles_per_request", "2"))

    def network(self, name: str):
        return lambda tiles: run_network(name, tiles, self.per_request, input_name="input", output_name="logits")

    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        mirroring = bool(np.asarray(inputs[Tensor.TTA]).reshape(-1)[0]) if Tensor.TTA in inputs else None
        try:
            networks = self.plan.fold_networks(inputs[Tensor.FOLDS].reshape(-1) if Tensor.FOLDS in inputs else None)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        predict = nnunet.predict_folds(self.plan, [self.network(name) for name in networks])
        logits = nnunet.sliding_window(inputs["DATA"], self.plan, predict, mirroring=mirroring)
        return {"LOGITS": logits}


class PostprocessModel(_PlanModel):
    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        props = nnunet.Properties.unpack(inputs["PROPS"], inputs["PROPS_SPACING"])
        seg, prob = nnunet.postprocess(inputs["LOGITS"], props, self.plan, probabilities=True)
        return {Tensor.SEG: seg, Tensor.PROB: prob}
