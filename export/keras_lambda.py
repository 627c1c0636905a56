"""Decode the one Keras `Lambda` layer SCT's centerline models use, without running it.

Keras 2 stores a lambda as `[marshal.dumps(code), defaults, closure]`, the bytes as a latin-1
string. The `_ctr` models were saved by Python 2, whose marshal format Python 3 cannot load, so we
parse the few object types a code object needs and accept exactly one program:
`lambda z: z / temperature` (LOAD_FAST 0, LOAD_DEREF 0, BINARY_DIVIDE, RETURN_VALUE), whose closure
holds `temperature`. Anything else is refused: we never execute code taken from a model file.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any

from lesionseg.core.errors import ExportError

# Python 2.7 opcodes: LOAD_FAST 0, LOAD_DEREF 0, BINARY_DIVIDE, RETURN_VALUE
_DIVIDE_BY_CLOSURE = b"|\x00\x00\x88\x00\x00\x1bS"


@dataclasses.dataclass(frozen=True)
class Py2Code:
    argcount: int
    code: bytes
    varnames: tuple[str, ...]
    freevars: tuple[str, ...]
    name: str


class _Reader:
    """Just enough of Python 2's marshal format for a lambda's code object."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.interned: list[Any] = []

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated marshal data")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int32(self) -> int:
        return struct.unpack("<i", self.take(4))[0]

    def object(self) -> Any:  # noqa: PLR0911 - one branch per marshal type
        kind = self.take(1)
        if kind == b"N":
            return None
        if kind in (b"T", b"F"):
            return kind == b"T"
        if kind == b"i":
            return self.int32()
        if kind == b"g":
            return struct.unpack("<d", self.take(8))[0]
        if kind in (b"s", b"t", b"u"):
            raw = self.take(self.int32())
            value = raw.decode("utf-8") if kind == b"u" else raw
            if kind == b"t":
                value = raw.decode("latin-1")
                self.interned.append(value)
            return value
        if kind == b"R":
            return self.interned[self.int32()]
        if kind == b"(":
            return tuple(self.object() for _ in range(self.int32()))
        if kind == b"c":
            argcount, _nlocals, _stacksize, _flags = (self.int32() for _ in range(4))
            code = self.object()
            _consts, _names = self.object(), self.object()
            varnames, freevars, _cellvars = self.object(), self.object(), self.object()
            _filename, name = self.object(), self.object()
            self.int32()  # first line number
            self.object()  # line number table
            text = lambda items: tuple(i.decode("latin-1") if isinstance(i, bytes) else i for i in items)  # noqa: E731
            return Py2Code(argcount, code, text(varnames), text(freevars), name if isinstance(name, str) else name.decode())
        raise ValueError(f"unsupported marshal type {kind!r}")


def parse_py2_code(data: bytes) -> Py2Code:
    """Parse a Python-2 marshalled code object (ValueError when it is not one)."""
    obj = _Reader(data).object()
    if not isinstance(obj, Py2Code):
        raise ValueError("not a code object")
    return obj


def lambda_divisor(layer_name: str, config: dict[str, Any], *, source: str) -> float:
    """The `temperature` of a `lambda z: z / temperature` Lambda layer config.

    Raises:
        ExportError: the Lambda is anything else (one line naming `source` and the layer).
    """
    refuse = f"{source}: Lambda layer {layer_name!r} is not 'lambda z: z / temperature'; refusing unknown code"
    function = config.get("function")
    if config.get("function_type") != "lambda" or not isinstance(function, list) or len(function) != 3:
        raise ExportError(refuse)
    body, _defaults, closure = function
    try:
        code = parse_py2_code(body.encode("latin-1"))
    except (ValueError, UnicodeEncodeError, AttributeError, struct.error):
        raise ExportError(refuse) from None
    if code.code != _DIVIDE_BY_CLOSURE or code.argcount != 1 or len(code.freevars) != 1:
        raise ExportError(refuse)
    if not isinstance(closure, list) or len(closure) != 1 or not isinstance(closure[0], (int, float)):
        raise ExportError(f"{source}: Lambda layer {layer_name!r} has no numeric closure value")
    value = float(closure[0])
    if value == 0 or not math.isfinite(value):
        raise ExportError(f"{source}: Lambda layer {layer_name!r} divides by {value}")
    return value
