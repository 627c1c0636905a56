"""The memory an embedded Triton server (tritonserver + its Python-backend stubs) holds while it serves.

Three measures, all of the server's process tree from its start (model loading included):

  cgroup   the kernel's own count: the server is started inside a fresh memory cgroup (v1
           `memory.max_usage_in_bytes`, v2 `memory.peak`), so its peak counts every page once,
           shared libraries, the stubs' shared-memory regions and the page cache of the files it
           read included. This is what a container memory limit sees. Needs a writable memory
           cgroup hierarchy (root in a container usually is); "nan" otherwise.
  pss      the largest sum of the processes' proportional set sizes, sampled every 50 ms:
           shared pages split between the processes that map them.
  hwm      the sum of each process's own VmHWM: an upper bound (a library mapped by 12 stubs
           counts 12 times, and the processes' peaks need not coincide); the measure
           bench/README.md used before the memory settings.

    with measured_server(settings) as served:
        ...  # requests to served.server
        peaks = served.peaks()  # before leaving: the processes must still exist
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Iterator

CGROUP_ROOT = Path("/sys/fs/cgroup")


def process_tree(pid: int) -> list[int]:
    pids, stack = [], [pid]
    while stack:
        current = stack.pop()
        pids.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        if children.exists():
            stack.extend(int(p) for p in children.read_text().split())
    return pids


def _kib(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def hwm_sum_mb(pid: int) -> float:
    """Sum of VmHWM over `pid`'s process tree, MiB."""
    return sum(_kib(Path(f"/proc/{p}/status"), "VmHWM:") for p in process_tree(pid)) / 1024


def pss_sum_mb(pid: int) -> float:
    """Sum of Pss over `pid`'s process tree now, MiB."""
    return sum(_kib(Path(f"/proc/{p}/smaps_rollup"), "Pss:") for p in process_tree(pid)) / 1024


@dataclasses.dataclass(frozen=True)
class Peaks:
    cgroup_mb: float  # nan without a memory cgroup
    pss_mb: float
    hwm_mb: float

    def line(self) -> str:
        return (f"cgroup {self.cgroup_mb:.0f} MiB, summed PSS {self.pss_mb:.0f} MiB, "
                f"summed VmHWM {self.hwm_mb:.0f} MiB (upper bound)")


class MemoryCgroup:
    """A fresh memory cgroup (v1 or v2) this process can start children in; `None` from `create`
    where there is no writable one."""

    def __init__(self, path: Path, version: int, home: Path) -> None:
        self.path, self.version, self.home = path, version, home

    @classmethod
    def create(cls) -> "MemoryCgroup | None":
        name = f"lesionseg-bench-{os.getpid()}-{time.monotonic_ns()}"
        entries = Path("/proc/self/cgroup").read_text().splitlines()
        v1 = [e.split(":", 2)[2] for e in entries if e.split(":")[1] == "memory"]
        v2 = [e.split(":", 2)[2] for e in entries if e.startswith("0::")]
        candidates = []
        if v1 and (CGROUP_ROOT / "memory").is_dir():
            candidates.append((CGROUP_ROOT / "memory", v1[0], 1))
        if v2 and "memory" in _read(CGROUP_ROOT / "cgroup.controllers"):
            candidates.append((CGROUP_ROOT, v2[0], 2))
        for root, home, version in candidates:
            path = root / name
            try:
                path.mkdir()
            except OSError:
                continue
            return cls(path, version, root / home.lstrip("/"))
        return None

    @contextlib.contextmanager
    def joined(self) -> Iterator[None]:
        """This process inside the cgroup (children started meanwhile stay there), then back home."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))
        try:
            yield
        finally:
            (self.home / "cgroup.procs").write_text(str(os.getpid()))

    def peak_mb(self) -> float:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        text = _read(self.path / name)
        return int(text) / 2**20 if text.strip().isdigit() else float("nan")

    def remove(self) -> None:
        for _ in range(50):  # the stubs may take a moment to leave after the server stops
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class Served:
    """A started, ready server and the memory sampler of its process tree."""

    def __init__(self, server, cgroup: MemoryCgroup | None) -> None:
        self.server, self.cgroup = server, cgroup
        self._pss = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                self._pss = max(self._pss, pss_sum_mb(self.server.pid))
            self._stop.wait(0.05)

    def peaks(self) -> Peaks:
        self._stop.set()
        self._thread.join()
        cgroup = self.cgroup.peak_mb() if self.cgroup is not None else float("nan")
        return Peaks(cgroup_mb=cgroup, pss_mb=self._pss, hwm_mb=hwm_sum_mb(self.server.pid))


@contextlib.contextmanager
def added_environment(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def measured_server(settings, env: dict[str, str] | None = None) -> Iterator[Served]:
    """An EmbeddedServer on `settings` (with `env` added to its environment), started inside a fresh
    memory cgroup when one can be made, waited for, measured; stopped on leaving."""
    from lesionseg.server.launch.embedded import EmbeddedServer

    cgroup = MemoryCgroup.create()
    try:
        server = EmbeddedServer(settings)
        with added_environment(env or {}), cgroup.joined() if cgroup is not None else contextlib.nullcontext():
            server.start()
        try:
            server.wait_ready()
            served = Served(server, cgroup)
            yield served
            served._stop.set()
        finally:
            server.stop()
    finally:
        if cgroup is not None:
            cgroup.remove()
