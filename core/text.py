"""Text from outside (patient and series strings, DICOM values) made safe to print on a terminal."""

from __future__ import annotations


def printable(text: object) -> str:
    """`text` with every character that is not printable (C0 and C1 controls such as ESC, CR,
    BEL; DEL; line and paragraph separators) written as its Python escape (ESC -> `\\x1b`), so
    a crafted value cannot move the cursor, clear the screen or retitle the operator's terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
