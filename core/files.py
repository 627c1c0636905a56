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


def folder_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why files cannot be written into `folder` (made when missing), or None: a part of its path
    is a file, or its nearest existing folder cannot be written (probed with a temporary file that
    is removed at once, so a read-only file system or missing permission shows)."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".lesionseg-probe.", dir=existing)
    except OSError as exc:
        return f"cannot write in {existing} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(probe)
    return None


def refuse_inputs(outputs, inputs) -> None:
    """--overwrite replaces earlier outputs, never what the user gave: refuse any of `outputs`
    that is one of `inputs` (the same file, however named).

    Raises:
        UsageError: naming the output.
    """
    from lesionseg.core.errors import UsageError

    given = {Path(p).resolve() for p in inputs if p}
    for path in outputs:
        if path and Path(path).resolve() in given:
            raise UsageError(f"{path} is an input of this command: it is never overwritten (choose another output)")


def check_folders_writable(folders, *, what: str = "output folder") -> None:
    """Refuse folders files cannot be written into (see `folder_problem`), before any work.

    Raises:
        UsageError: naming the folder and the problem.
    """
    from lesionseg.core.errors import UsageError

    for folder in dict.fromkeys(Path(f) for f in folders):
        problem = folder_problem(folder)
        if problem is not None:
            raise UsageError(f"{what} {folder}: {problem}")


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
