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


def parse(kind: type[enum.Enum], value, what: str):
    """`value` as a member of the closed set `kind`.

    Raises:
        UsageError: "unknown <what> 'x' (choose from a, b, c)".
    """
    from lesionseg.core.errors import UsageError

    try:
        return kind(value)
    except ValueError:
        raise UsageError(f"unknown {what} {value!r} (choose from {', '.join(choices(kind))})") from None


class Target(StrEnum):
    """Where a repository's networks run: the CPU configs only, or also the GPU variants."""

    CPU, GPU = "cpu", "gpu"


class Backend(StrEnum):
    """The Triton backend of a CPU network config: the embedded server's Python backend, or
    Triton's own (NGC images)."""

    PYTHON, ONNXRUNTIME, OPENVINO = "python", "onnxruntime", "openvino"


class Runtime(StrEnum):
    """What a Python-backend network runs on; AUTO: each network's measured choice."""

    AUTO, ONNXRUNTIME, OPENVINO = "auto", "onnxruntime", "openvino"


class Precision(StrEnum):
    """A network's arithmetic: FP32, or a reduced one written only with a passing parity report."""

    FP32, BF16, INT8, FP16 = "fp32", "bf16", "int8", "fp16"


class Plane(StrEnum):
    """An anatomical plane: of a series' slices (the patient axis its normal is closest to), or
    of a QC view."""

    AXIAL, SAGITTAL, CORONAL = "axial", "sagittal", "coronal"
