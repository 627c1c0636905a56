"""The numpy steps of every model family (legacy, nnunet, monai, ivadomed), free of Triton.

Networks are injected as `Predict` callables, so the same steps run under Triton (BLS requests
from `lesionseg.server.backend`) and in-process (tests, benchmarks).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, ClassVar

import numpy as np

#: A network: a batch of items (first axis) in, the network's outputs for them out.
Predict = Callable[[np.ndarray], np.ndarray]


class JsonPlan:
    """A family's plan (a frozen dataclass) as it travels in a model's `plan` config parameter:
    written by the export, read by every Triton model of the task. JSON has no tuples: the
    fields named in `TUPLES` come back as tuples (None stays None)."""

    TUPLES: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]):
        return cls(**{k: tuple(v) if k in cls.TUPLES and v is not None else v for k, v in raw.items()})

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))
