"""Two tiny models proving the serving chain (client -> ensemble -> Python models -> response).

Used only by the tests' repository (`tests/model_repository`): `selftest_scale` multiplies a
float vector by the config parameter `factor` and refuses non-finite or empty input with a
per-request error; `selftest_sum` adds a vector up. The ensemble `selftest` chains them.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lesionseg.server.backend.base import PythonModel, RequestError


def scale(values: np.ndarray, factor: float) -> np.ndarray:
    """`values * factor` as float32; values: 1-D float32 vector of any length >= 1."""
    if values.size == 0:
        raise RequestError("X is empty")
    if not np.all(np.isfinite(values)):
        raise RequestError("X contains NaN or infinite values")
    return (values * np.float32(factor)).astype(np.float32)


class ScaleModel(PythonModel):
    def setup(self, config: Mapping[str, Any]) -> None:
        self.factor = float(self.parameters.get("factor", "1"))

    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {"Y": scale(inputs["X"], self.factor)}


class SumModel(PythonModel):
    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {"TOTAL": np.array([inputs["Y"].sum(dtype=np.float64)], dtype=np.float32)}
