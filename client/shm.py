"""Triton system shared memory for one request: a POSIX region `/lesionseg_<pid>_<thread>_<n>`
created, filled and registered with the server, then unregistered and unlinked whatever happens.

A region of a killed client stays in /dev/shm and registered with the server; `clear_stale`
(run by the next client) unregisters those whose file is gone, and `leaked_regions` finds the
files nobody will remove.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

PREFIX = "lesionseg_"
_counter = itertools.count()
_counter_lock = threading.Lock()


def _shm():
    import tritonclient.utils.shared_memory as shm

    return shm


class Region:
    """One request's shared-memory region on `client` (a tritonclient gRPC client) of at least
    `nbytes`: `put` inputs, `take` room for outputs, `register`, `read` outputs; `close` undoes all."""

    def __init__(self, client, nbytes: int) -> None:
        with _counter_lock:
            n = next(_counter)
        self.name = f"{PREFIX}{os.getpid()}_{threading.get_ident() % 100000}_{n}"
        self.key = "/" + self.name
        self.size = max(int(nbytes), 1)
        self.client = client
        self.handle = _shm().create_shared_memory_region(self.name, self.key, self.size)
        self.registered = False
        self.offset = 0

    def register(self) -> None:
        self.client.register_system_shared_memory(self.name, self.key, self.size)
        self.registered = True

    def put(self, array: np.ndarray) -> int:
        """Copy `array` in at the next free offset; returns that offset."""
        offset = self.offset
        _shm().set_shared_memory_region(self.handle, [np.ascontiguousarray(array)], offset=offset)
        self.offset += array.nbytes
        return offset

    def take(self, nbytes: int) -> int:
        """Reserve `nbytes` at the next free offset (for an output); returns that offset."""
        offset = self.offset
        self.offset += nbytes
        return offset

    def read(self, dtype, shape, offset: int) -> np.ndarray:
        return np.array(_shm().get_contents_as_numpy(self.handle, dtype, shape, offset=offset))  # copy out

    def _unregister(self, patience: float = 10.0) -> None:
        """Unregister from the server. Triton may still hold the region for a moment after it sent the
        response ("currently in use"): retry for up to `patience` seconds. A server that is gone
        took its registry with it."""
        deadline = time.monotonic() + patience
        delay = 0.005
        while True:
            try:
                self.client.unregister_system_shared_memory(self.name)
                return
            except Exception as exc:  # noqa: BLE001
                text = str(exc)
                if "in use" not in text or time.monotonic() >= deadline:
                    log = logger.warning if "in use" in text else logger.debug
                    log("unregistering shared-memory region %s: %s", self.name, text)
                    return
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def close(self) -> None:
        if self.registered:
            self._unregister()
        try:
            _shm().destroy_shared_memory_region(self.handle)
        except Exception as exc:  # noqa: BLE001 - e.g. a view still exported; unlink the name anyway
            logger.warning("could not release shared-memory region %s cleanly: %s", self.key, exc)
            (Path("/dev/shm") / self.name).unlink(missing_ok=True)


def probe(client) -> str | None:
    """None when the server at `client` can map a region of ours (same host and IPC namespace),
    else why not."""
    try:
        region = Region(client, 64)
    except Exception as exc:  # noqa: BLE001 - e.g. no /dev/shm in this container
        return str(exc)
    try:
        region.register()
        return None
    except Exception as exc:  # noqa: BLE001 - server in another IPC namespace
        message = getattr(exc, "message", None)
        return (message() if callable(message) else "") or str(exc)
    finally:
        region.close()


def clear_stale(client) -> None:
    """Unregister lesionseg regions the server still maps although their file is gone from
    /dev/shm (a client killed mid-request): nobody else will, and each pins server memory."""
    try:
        status = client.get_system_shared_memory_status()
    except Exception as exc:  # noqa: BLE001
        logger.debug("shared-memory status: %s", exc)
        return
    for name, region in status.regions.items():
        if name.startswith(PREFIX) and not (Path("/dev/shm") / region.key.lstrip("/")).exists():
            try:
                client.unregister_system_shared_memory(name)
                logger.info("unregistered stale shared-memory region %s", name)
            except Exception as exc:  # noqa: BLE001 - in use after all, or already gone
                logger.debug("stale region %s: %s", name, exc)


def leaked_regions(pids=None) -> list[str]:
    """lesionseg shared-memory regions in /dev/shm created by `pids`, or (default) by processes that
    have exited — those nobody will remove. A region of a running client is in use, not leaked."""
    root = Path("/dev/shm")
    found = []
    for path in sorted(root.glob(PREFIX + "*")) if root.is_dir() else []:
        owner = path.name[len(PREFIX):].split("_", 1)[0]
        pid = int(owner) if owner.isdigit() else -1
        if (pid in pids) if pids is not None else not Path(f"/proc/{pid}").exists():
            found.append(path.name)
    return found
