"""`NetworkEntry`: what a network's repository entries are made from (its tensors and batching)."""

from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True, kw_only=True)
class NetworkEntry:
    """A network model entry: tensor names and per-item shapes (batch axis excluded)."""

    name: str
    input_name: str
    output_names: Sequence[str]
    input_dims: tuple[int, ...]
    output_dims: tuple[int, ...]
    max_batch_size: int = 16
    queue_delay_us: int = 2000
    instance_count: int = 0  # 0: CPU_NETWORK_INSTANCES
    threads: int = 0  # intra-op threads of each CPU instance; 0: CPU_INTRA_OP_THREADS
