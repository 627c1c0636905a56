"""The gateway's spool: every received instance is on disk, durably, before its C-STORE success.

Layout under the spool folder:
- `instances/<SeriesInstanceUID>/<SOPInstanceUID>.dcm` — received instances, as sent (Part 10);
  a UID that is not a conformant one is named by its SHA-256 (`x<hex>`): distinct UIDs never
  share a file;
- `results/<SeriesInstanceUID>/` — the SEG and SR made for a series;
- `journal.sqlite` — the job journal (`lesionseg.gateway.journal`).

An instance is written to a temporary file in its series folder, flushed and fsynced, linked
onto its name (never over an existing file: one with other content is a `SpoolConflict`) and the
folder fsynced: after a crash a file under its final name is complete. A
file that reached its name but not the journal (a crash between the two) is found again by
`orphans` when the gateway starts.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from lesionseg.client.dicom.uids import uid_problem


class SpoolConflict(Exception):
    """An instance file exists under the name with other content."""


def safe_uid(uid: str) -> str:
    """A file name for UID `uid`, one-to-one: a conformant UID (digits and dots, at most 64
    characters) is its own name; anything else is `x` and the SHA-256 of the whole string."""
    uid = str(uid).rstrip("\x00")
    return uid if uid_problem(uid) is None else "x" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()


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
        """`store`'s path."""
        return self.store(series_uid, sop_uid, data)[0]

    def store(self, series_uid: str, sop_uid: str, data: bytes) -> tuple[Path, bool]:
        """Write one instance durably (temporary file, fsync, link onto its name, fsync of the
        folder); returns its path and whether this call made the file. A file already under the
        name is kept: the same bytes are the same instance (a re-send); other bytes raise
        SpoolConflict and nothing is written. On any error nothing this call made is left."""
        created = False
        path = self.instance_path(series_uid, sop_uid)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)  # atomic, and never replaces a file already there
                created = True
            except FileExistsError:
                if path.read_bytes() != data:
                    raise SpoolConflict(f"{path} exists with other content") from None
            except OSError as exc:  # a file system without hard links (some network volumes)
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                    raise
                if path.exists():
                    if path.read_bytes() != data:
                        raise SpoolConflict(f"{path} exists with other content") from None
                else:
                    os.replace(tmp, path)
                    created = True
        finally:
            Path(tmp).unlink(missing_ok=True)
        try:
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except BaseException:
            if created:
                path.unlink(missing_ok=True)
            raise
        return path, created

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
