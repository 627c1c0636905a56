"""UIDs derived from names: the same parts give the same UID, on any machine, in any run.

A name-based (SHA-1, version 5) UUID of the parts, written in the `2.25.<integer>` form that
ITU-T X.667 / DICOM PS3.5 B.2 define for UUID-derived UIDs. (pydicom's `generate_uid` with
`prefix=None` ignores its `entropy_srcs` and returns a random UUID, which would make every re-run
a new object in the PACS.)
"""

from __future__ import annotations

import uuid

NAMESPACE = uuid.UUID("9f1c6a36-2f0e-5b7e-9a43-6c6573696f6e")  # lesionseg's own namespace for uuid5


def derived_uid(*parts: str) -> str:
    """The UID of `parts` (strings joined unambiguously)."""
    name = "\x1f".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(NAMESPACE, name).int}"
