"""The gateway's spool: every received instance is on disk, durably, before its C-STORE success.

Layout under the spool folder:
- `instances/<SeriesInstanceUID>/<SOPInstanceUID>.dcm` — received instances, as sent (Part 10);
- `results/<SeriesInstanceUID>/` — the SEG and SR made for a series;
- `journal.sqlite` — the job journal (`lesionseg.gateway.journal`).

An instance is written to a temporary file in its series folder, flushed and fsynced, renamed
onto its name and the folder fsynced: after a crash a file under its final name is complete. A
file that reached its name but not the journal (a crash between the two) is found again by
`orphans` when the gateway starts.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

_SAFE_UID = re.compile(r"^[0-9.]{1,64}$")


def safe_uid(uid: str) -> str:
    """A UID usable as a file name (DICOM UIDs are digits and dots); anything else is quoted."""
    uid = str(uid).strip().rstrip("\x00")
    return uid if _SAFE_UID.match(uid) else "x" + uid.encode().hex()[:120]


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.instances = self.root / "instances"
        self.results = self.root / "results"
        for folder in (self.instances, self.results):
            folder.mkdir(parents=True, exist_ok=True)

    def instance_path(self, series_uid: str, sop_uid: str) -> Path:
        return self.instances / safe_uid(series_uid) / f"{safe_uid(sop_uid)}.dcm"

    def results_folder(self, series_uid: str) -> Path:
        return self.results / safe_uid(series_uid)

    def write(self, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Write one instance durably (temporary file, fsync, rename, fsync of the folder)."""
        path = self.instance_path(series_uid, sop_uid)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return path

    def orphans(self, known: set[str]) -> list[Path]:
        """Complete instance files the journal does not list (temporary files are removed)."""
        found = []
        for path in sorted(self.instances.rglob("*")):
            if path.name.startswith(".incoming."):
                path.unlink(missing_ok=True)
            elif path.is_file() and str(path) not in known:
                found.append(path)
        return found

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
