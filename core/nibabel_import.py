"""nibabel, as lesionseg imports it: without pydicom.

nibabel's `nifti1` imports pydicom (with requests, tqdm and urllib3 behind it) as soon as nibabel
itself is imported, only to parse the DICOM header extensions a NIfTI file may carry (ecode 2).
lesionseg reads none of them, and that import is a large share of what one `lesionseg` process
costs beyond the server's own time (bench/startup.py). So nibabel is imported with pydicom hidden
for the moment of its import: such an extension is then kept as raw bytes (nibabel's plain
`Nifti1Extension`) and written back unchanged, and pydicom, when the DICOM inputs need it, is
imported as usual. Every lesionseg module imports nibabel from here, so the first import (the
one that counts) is this one.
"""

from __future__ import annotations

import sys


def _import_nibabel():
    if "nibabel" in sys.modules:
        return sys.modules["nibabel"]
    hidden = object()
    pydicom = sys.modules.get("pydicom", hidden)
    sys.modules["pydicom"] = None  # type: ignore[assignment]  # `import pydicom` raises ImportError
    try:
        import nibabel
        import nibabel.orientations  # noqa: F401  (the submodule lesionseg uses)
    finally:
        if pydicom is hidden:
            del sys.modules["pydicom"]
        else:
            sys.modules["pydicom"] = pydicom
    return nibabel


nibabel = _import_nibabel()
