"""Ceilings on the work one image may ask for.

An image's voxel count is bounded on the wire (`lesionseg.core.wire.MAX_VOXELS`), but what a
pipeline allocates is the image resampled to its model's spacing: a 50-voxel axis of 1e6 mm
voxels resampled to 1 mm is 5e7 voxels. `check_resampled` refuses a resampling whose result would
hold more than `max_voxels()` values, before anything is allocated; the server's pipelines call it
on every forward resampling, and the message names the shape, the count and the limit.

The limit: argument > `LESIONSEG_MAX_VOXELS` > 2**28 (268,435,456 values: 1 GiB of float32, as
much as one request may carry).
"""

from __future__ import annotations

import math
import os
from typing import Sequence

from lesionseg.core.errors import UsageError
from lesionseg.core.settings import ENV_PREFIX

DEFAULT_MAX_VOXELS = 2**28
MAX_VOXELS_ENV = f"{ENV_PREFIX}MAX_VOXELS"


class LimitExceeded(ValueError):
    """A request would make more than the limit allows; the message says what and by how much."""


def max_voxels(value: int | None = None) -> int:
    """The ceiling on the values one resampled image may hold (see the module docstring).

    Raises:
        UsageError: the environment variable is not a positive integer.
    """
    if value is not None:
        return int(value)
    raw = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_VOXELS
    try:
        parsed = int(raw)
    except ValueError:
        parsed = 0
    if parsed <= 0:
        raise UsageError(f"{MAX_VOXELS_ENV}={raw!r}: expected a positive whole number of voxels")
    return parsed


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float | None]) -> tuple[int, ...]:
    """The shape of a volume of `shape` and `spacing` (mm) resampled to `target` spacing (mm; None:
    that axis is kept): round(shape * spacing / target), at least 1, as the pipelines compute it."""
    return tuple(int(n) if t is None else max(1, int(round(n * float(s) / float(t)))) for n, s, t in zip(shape, spacing, target))


def check_resampled(shape: Sequence[int], *, channels: int = 1, what: str = "the image", limit: int | None = None) -> None:
    """Refuse a resampling to `shape` (with `channels` values per voxel) over the limit.

    Raises:
        LimitExceeded: naming `what`, the shape, its count and the limit.
    """
    ceiling = max_voxels(limit)
    count = math.prod(int(n) for n in shape) * int(channels)
    if count > ceiling:
        size = "x".join(str(int(n)) for n in shape)
        raise LimitExceeded(f"{what} resampled to the model's spacing would be {size}{f' x {channels} channels' if channels > 1 else ''} "
                            f"= {count:,} voxels, over the limit of {ceiling:,} ({MAX_VOXELS_ENV}); check the voxel size "
                            f"and units in its header")
