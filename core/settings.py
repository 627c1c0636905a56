"""Configuration precedence shared by every lesionseg setting: argument > `LESIONSEG_*` env > default."""

from __future__ import annotations

import os
from typing import Callable, TypeVar

from lesionseg.core.errors import UsageError

T = TypeVar("T")

ENV_PREFIX = "LESIONSEG_"


def setting(name: str, value: T | None, default: T, cast: Callable[[str], T] = str) -> T:  # type: ignore[assignment]
    """Resolve one setting.

    Args:
        name: the setting's name without prefix, e.g. ``"GRPC_PORT"`` reads ``LESIONSEG_GRPC_PORT``.
        value: the explicit argument, or None when not given.
        default: used when neither the argument nor the environment variable is set.
        cast: converts the environment string; a ValueError becomes a one-line UsageError.
    """
    if value is not None:
        return value
    raw = os.environ.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise UsageError(f"environment variable {ENV_PREFIX}{name}={raw!r} is invalid: {exc}") from None


def port(text: str) -> int:
    """Parse a TCP port number (1-65535)."""
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError(f"port {value} is outside 1-65535")
    return value
