"""A base for lesionseg's Python-backend models: one response per request, bad input answered
with a per-request `TritonError`, everything else logged and answered as an internal error.

Subclasses implement `setup(config)` and `process(inputs) -> outputs` on plain numpy arrays, so
their logic is unit-testable outside Triton. `triton_python_backend_utils` exists only inside
Triton's stub process and is imported lazily.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

import numpy as np

from lesionseg.core.limits import LimitExceeded

logger = logging.getLogger(__name__)


class RequestError(ValueError):
    """The request's input is unusable; its message goes back to the client for that request only."""


def _pb_utils() -> Any:
    import triton_python_backend_utils as pb_utils  # only importable inside Triton's stub

    return pb_utils


class PythonModel:
    """Base class for `TritonPythonModel` implementations.

    Attributes:
        config: the model's config as the dict Triton passes to `initialize`.
        parameters: its `parameters` as plain strings.
    """

    #: Input names that may be absent from a request.
    optional_inputs: frozenset[str] = frozenset()

    def initialize(self, args: Mapping[str, str]) -> None:
        self._args = dict(args)
        self.config: dict[str, Any] = json.loads(args["model_config"])
        self.name: str = args.get("model_name", self.config.get("name", "?"))
        self.parameters = {k: v.get("string_value", "") for k, v in self.config.get("parameters", {}).items()}
        self.input_names = [t["name"] for t in self.config.get("input", [])]
        self.output_names = [t["name"] for t in self.config.get("output", [])]
        self.setup(self.config)

    def setup(self, config: Mapping[str, Any]) -> None:
        """Prepare the model (load weights, read parameters). Called once per instance."""

    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Compute one request's outputs from its inputs (numpy arrays, as declared in the config).

        Raises:
            RequestError: the input is bad; the client gets this message.
        """
        raise NotImplementedError

    def _read_inputs(self, request: Any) -> dict[str, np.ndarray]:
        pb_utils = _pb_utils()
        inputs: dict[str, np.ndarray] = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                if name not in self.optional_inputs:
                    raise RequestError(f"input {name!r} is missing")
                continue
            inputs[name] = tensor.as_numpy()
        return inputs

    def respond(self, request: Any) -> Any:
        """The response to one request (never raises)."""
        pb_utils = _pb_utils()
        try:
            outputs = self.process(self._read_inputs(request))
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(outputs[name])) for name in self.output_names if name in outputs]
            return pb_utils.InferenceResponse(output_tensors=tensors)
        except (RequestError, LimitExceeded) as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {exc}"))
        except Exception as exc:  # noqa: BLE001 - a bug must not take the instance down
            logger.exception("%s: internal error", self.name)
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: internal error: {exc}"))

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self.respond(request) for request in requests]

    def finalize(self) -> None:
        """Release resources (called when Triton unloads the model)."""
