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
    #: an input with free (-1) dims: the smallest and the largest per-item shape the GPU variant's
    #: TensorRT profile covers (tuned for the largest); None: `input_dims` are fixed
    gpu_dims: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def __post_init__(self) -> None:
        if self.gpu_dims is not None:
            smallest, largest = self.gpu_dims
            fits = all(len(d) == len(self.input_dims) and all(f in (-1, v) for f, v in zip(self.input_dims, d)) for d in self.gpu_dims)
            if not fits or not all(0 < a <= b for a, b in zip(smallest, largest)):
                raise ValueError(f"{self.name}: GPU profile {self.gpu_dims} does not fit input dims {self.input_dims}")

    @property
    def profile_dims(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """(smallest, largest) per-item input shape of a TensorRT profile; None when a free dim has no range."""
        if self.gpu_dims is not None:
            return self.gpu_dims
        return None if -1 in self.input_dims else (self.input_dims, self.input_dims)
