"""UIDs derived from names: the same parts give the same UID, on any machine, in any run.

A name-based (SHA-1, version 5) UUID of the parts, written in the `2.25.<integer>` form that
ITU-T X.667 / DICOM PS3.5 B.2 define for UUID-derived UIDs. (pydicom's `generate_uid` with
`prefix=None` ignores its `entropy_srcs` and returns a random UUID, which would make every re-run
a new object in the PACS.)
"""

from __future__ import annotations

import re
import uuid

NAMESPACE = uuid.UUID("9f1c6a36-2f0e-5b7e-9a43-6c6573696f6e")  # lesionseg's own namespace for uuid5


def derived_uid(*parts: str) -> str:
    """The UID of `parts` (strings joined unambiguously)."""
    name = "\x1f".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(NAMESPACE, name).int}"


_COMPONENT = re.compile(r"^(0|[1-9][0-9]*)$")


def uid_problem(uid: str) -> str | None:
    """What makes `uid` not a conformant DICOM UID (PS3.5 9.1: at most 64 characters, components
    of digits separated by dots, no leading zero in a component), or None when it is one. Trailing
    NUL padding is the encoding's and does not count; a trailing space does."""
    uid = str(uid).rstrip("\x00")
    if not uid:
        return "empty"
    if len(uid) > 64:
        return f"{len(uid)} characters, over 64"
    bad = sorted({c for c in uid if c not in "0123456789."})
    if bad:
        return f"characters other than digits and dots ({', '.join(repr(c) for c in bad[:5])})"
    if not all(_COMPONENT.match(part) for part in uid.split(".")):
        return "an empty component or one with a leading zero"
    return None


#: the UIDs that name an instance and that our SEG and SR reference: (keyword, name in messages)
IDENTITY_UIDS = (("SOPInstanceUID", "SOP Instance UID"), ("SeriesInstanceUID", "Series Instance UID"),
                 ("StudyInstanceUID", "Study Instance UID"))


def identity_problem(ds) -> tuple[str, str, str] | None:
    """The first of a dataset's SOP Instance, Series Instance and Study Instance UIDs that is not
    conformant, as (name, UID, problem), or None when all are."""
    for keyword, name in IDENTITY_UIDS:
        uid = str(ds.get(keyword, "")).rstrip("\x00")
        problem = uid_problem(uid)
        if problem is not None:
            return name, uid, problem
    return None
