"""The numpy steps of every model family (legacy, nnunet, monai, ivadomed), free of Triton.

Networks are injected as `Predict` callables, so the same steps run under Triton (BLS requests
from `lesionseg.server.backend`) and in-process (tests, benchmarks).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

#: A network: a batch of items (first axis) in, the network's outputs for them out.
Predict = Callable[[np.ndarray], np.ndarray]
