"""Business-logic scripting: calling other Triton models from a Python-backend model."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from lesionseg.server.backend.base import _pb_utils


def run_network(model: str, batch: np.ndarray, per_request: int, *, input_name: str = "input_1",
                output_name: str = "predictions") -> np.ndarray:
    """Run `model` on `batch` (first axis = items): `per_request` items per BLS request, all
    requests in flight at once so the model's dynamic batcher can merge them with other work."""
    pb_utils = _pb_utils()
    chunks = [np.ascontiguousarray(batch[i : i + per_request]) for i in range(0, len(batch), per_request)]

    async def send() -> list[Any]:
        requests = [
            pb_utils.InferenceRequest(model_name=model, requested_output_names=[output_name],
                                      inputs=[pb_utils.Tensor(input_name, chunk)])
            for chunk in chunks
        ]
        return await asyncio.gather(*(r.async_exec() for r in requests))

    responses = asyncio.run(send())
    outputs = []
    for response in responses:
        if response.has_error():
            raise RuntimeError(f"{model}: {response.error().message()}")
        outputs.append(pb_utils.get_output_tensor_by_name(response, output_name).as_numpy())
    return np.concatenate(outputs)
