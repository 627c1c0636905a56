"""`StrEnum` for lesionseg's closed sets of names, on every Python the server code runs on (the NGC
Triton image has Python 3.10, where `enum.StrEnum` does not exist yet), and the closed sets that
several layers share.

A member is its value wherever a string is expected (`Runtime.OPENVINO == "openvino"`,
f"{member}" is the value), so configs, command lines and files keep the plain names.
"""

from __future__ import annotations

import enum
import sys

if sys.version_info >= (3, 11):
    StrEnum = enum.StrEnum
else:  # pragma: no cover - Python 3.10 (the Triton image)

    class StrEnum(str, enum.Enum):
        """`enum.StrEnum` of Python 3.11."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


def choices(kind: type[enum.Enum]) -> tuple[str, ...]:
    """The values of a closed set, in declaration order (argparse `choices`, messages)."""
    return tuple(str(member.value) for member in kind)
