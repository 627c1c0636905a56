"""A network served from `<model>/<version>/model.onnx` with ONNX Runtime inside the Python backend.

The embedded Triton (nvidia-pytriton) has no onnxruntime backend, so each network is a
Python-backend model holding one `onnxruntime.InferenceSession` (or, with the config parameter
`runtime` "openvino", one OpenVINO compiled model: `lesionseg.server.backend.runtimes`; the
parameter `precision` says what the export proved: "bf16" asks OpenVINO for BF16 arithmetic,
"int8" marks a quantized graph; `run_batch` N > 0 runs a batch N items at a time and
`ort_mem_pattern` "0" turns off ONNX Runtime's memory pattern, the memory settings of
`lesionseg.server.repository.networks`; `LESIONSEG_RUN_BATCH`, `LESIONSEG_ORT_MEM_PATTERN` and
`LESIONSEG_ORT_ARENA` override them). With `max_batch_size > 0` and
dynamic batching in its config, Triton hands `execute` several requests at once: their inputs are
concatenated along the batch axis, run in one call, and split back — real batching of tiles from
concurrent requests. Production images use Triton's own `onnxruntime` backend with the same
config otherwise (see `lesionseg.server.repository.networks`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lesionseg.core.errors import UsageError
from lesionseg.server.backend.base import PythonModel, RequestError, _pb_utils
from lesionseg.server.backend.runtimes import PARITY_REPORT, RUNNER_PRECISION, make_runner, other_cpu_warning

logger = logging.getLogger(__name__)


class OnnxNetModel(PythonModel):
    """Runs `model.onnx`; the config's inputs/outputs name the ONNX graph's tensors."""

    def setup(self, config: Mapping[str, Any]) -> None:
        weights = self.parameters.get("weights", "model.onnx")
        self.path = Path(self._args["model_repository"]) / self._args["model_version"] / weights
        # an operator's environment (LESIONSEG_ORT_THREADS / _SPINNING) > the config's parameters > ORT's defaults
        threads = int(os.environ.get("LESIONSEG_ORT_THREADS") or self.parameters.get("intra_op_threads", "0"))
        spinning = (os.environ.get("LESIONSEG_ORT_SPINNING") or self.parameters.get("ort_spinning", "1")) != "0"
        self.runtime = os.environ.get("LESIONSEG_NETWORK_RUNTIME") or self.parameters.get("runtime", "onnxruntime")
        # "fp32" unless an export wrote a reduced precision with its parity report (lesionseg.export.precision)
        self.precision = self.parameters.get("precision", "fp32")
        if self.precision not in RUNNER_PRECISION:
            raise UsageError(f"{self.name}: unknown precision {self.precision!r} (choose from {', '.join(RUNNER_PRECISION)})")
        if self.precision != "fp32" and (warning := other_cpu_warning(Path(self._args["model_repository"]) / PARITY_REPORT)):
            logger.warning("%s: %s", self.name, warning)
        # memory (bench/README.md, "Server memory"): ONNX Runtime's memory pattern and arena, the items run at once
        memory_pattern = (os.environ.get("LESIONSEG_ORT_MEM_PATTERN") or self.parameters.get("ort_mem_pattern", "1")) != "0"
        arena = (os.environ.get("LESIONSEG_ORT_ARENA") or self.parameters.get("ort_arena", "1")) != "0"
        run_batch_text = os.environ.get("LESIONSEG_RUN_BATCH") or self.parameters.get("run_batch", "0")
        if not run_batch_text.isdigit():
            raise UsageError(f"{self.name}: run_batch must be a whole number >= 0, not {run_batch_text!r}")
        run_batch = int(run_batch_text)
        self.session = make_runner(self.path, runtime=self.runtime, threads=threads, spinning=spinning,
                                   precision=RUNNER_PRECISION[self.precision], memory_pattern=memory_pattern,
                                   arena=arena, run_batch=run_batch)
        self.batched = int(config.get("max_batch_size", 0)) > 0
        logger.info("%s: loaded %s on %s %s (threads=%s, run_batch=%s, memory pattern %s)", self.name, self.path,
                    self.runtime, self.precision, threads or "default", run_batch or "whole", memory_pattern)

    def execute(self, requests: list[Any]) -> list[Any]:
        if not self.batched or len(requests) == 1:
            return [self.respond(r) for r in requests]
        pb_utils = _pb_utils()
        batches: list[dict[str, np.ndarray]] = []
        responses: list[Any] = [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                batches.append(self._read_inputs(request))
            except RequestError as exc:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {exc}"))
                batches.append({})
        good = [i for i, b in enumerate(batches) if b]
        if good:
            try:
                merged = {name: np.concatenate([batches[i][name] for i in good]) for name in self.input_names}
                outputs = self.session.run(self.output_names, merged)
                offset = 0
                for i in good:
                    n = len(batches[i][self.input_names[0]])
                    tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[offset : offset + n]))
                               for name, out in zip(self.output_names, outputs)]
                    responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                    offset += n
            except Exception as exc:  # noqa: BLE001
                logger.exception("%s: batch failed", self.name)
                for i in good:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {exc}"))
        return responses

    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        try:
            outputs = self.session.run(self.output_names, {name: inputs[name] for name in self.input_names})
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime reports shape/type errors this way
            raise RequestError(str(exc).splitlines()[0]) from None
        return dict(zip(self.output_names, outputs))
