"""Files written whole or not at all, and their checksums.

Every output (masks, sidecars, QC pages, exported weights) is written to a temporary file in its
own folder and renamed onto its name, so a crash leaves the complete file or none, and readers
never see half a file. Written files get the mode a plain `open()` would give (0666 less the
umask): outputs are read by others (PACS, QC viewers, Triton).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _read_umask() -> int:
    mask = os.umask(0o022)  # read once, at import (before any worker thread creates files)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def file_mode() -> int:
    """0666 less the process umask: what a plain open() would have created."""
    return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path` (ending in `suffix`) to write; when the block ends
    without error it gets `file_mode()` and replaces `path`, otherwise it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_path`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
