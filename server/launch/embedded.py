"""Run the bundled Triton server as a child process: start, wait for readiness, stop.

`EmbeddedServer` is the one lifecycle used by `lesionseg serve`, by the client when it needs a
server for its own run, and by the tests (one server per test session).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from lesionseg.core import paths
from lesionseg.core.errors import RepositoryError, ServerStartError, UsageError
from lesionseg.core.settings import port, setting
from lesionseg.server.launch.binary import find_distribution, make_backend_dir, server_environment

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """How to run the embedded Triton server.

    Ports are TCP ports on `host`; `startup_timeout` and `grace_period` are seconds. `repository`
    is made absolute against the current directory: Triton runs in a work folder of its own.
    """

    repository: Path
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    log_verbose: int = 0
    startup_timeout: float = 600.0
    grace_period: float = 20.0
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "repository", paths.user_path(self.repository))
        for name in ("grpc_port", "http_port", "metrics_port"):
            value = getattr(self, name)
            if not 0 < value < 65536:
                raise UsageError(f"{name.replace('_', ' ')} {value} is outside 1-65535")

    @classmethod
    def resolve(
        cls,
        *,
        repository: str | Path | None = None,
        host: str | None = None,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        log_verbose: int | None = None,
        startup_timeout: float | None = None,
        grace_period: float | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> "ServerSettings":
        """Settings from arguments, then `LESIONSEG_*` environment variables, then defaults."""
        return cls(
            repository=paths.repository(repository),
            host=setting("HOST", host, "127.0.0.1"),
            grpc_port=setting("GRPC_PORT", grpc_port, 8001, port),
            http_port=setting("HTTP_PORT", http_port, 8000, port),
            metrics_port=setting("METRICS_PORT", metrics_port, 8002, port),
            log_verbose=setting("LOG_VERBOSE", log_verbose, 0, int),
            startup_timeout=setting("STARTUP_TIMEOUT", startup_timeout, 600.0, float),
            grace_period=setting("GRACE_PERIOD", grace_period, 20.0, float),
            extra_args=extra_args,
        )

    @property
    def client_host(self) -> str:
        """The address a local client should dial (a wildcard bind is reached on loopback)."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else ("::1" if self.host == "::" else self.host)

    @property
    def grpc_url(self) -> str:
        return f"{self.client_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.client_host}:{self.http_port}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now (for tests and ad-hoc servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` different free TCP ports on `host`, ascending (gRPC, HTTP, metrics of a server)."""
    chosen: set[int] = set()
    while len(chosen) < count:
        chosen.add(free_port(host))
    return sorted(chosen)


def port_in_use(host: str, number: int) -> bool:
    """True when a listening socket already holds `host:number` (TIME_WAIT leftovers do not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, number))
        except OSError:
            return True
    return False


def _require_directory(path: Path) -> None:
    """Refuse a repository path that is missing or is not a directory (one-line RepositoryError)."""
    if not path.exists():
        raise RepositoryError(f"{path}: model repository does not exist")
    if not path.is_dir():
        raise RepositoryError(f"{path}: model repository is not a directory")


_BENIGN = ("CudaDriverHelper has not been initialized", "Unable to allocate pinned system memory")
_LOG_LINE = re.compile(r'^[EW]\d{4} [\d:.]+\s+\d+\s+[\w.]+:\d+\]\s+"?(?P<msg>.*?)"?$')


def summarize_failure(log_text: str) -> str:
    """One line saying why Triton stopped, picked from its log."""
    errors: list[str] = []
    for line in log_text.splitlines():
        line = line.strip()
        if line.startswith("error: "):
            errors.append(line[len("error: "):])
            continue
        if line.startswith("E"):
            match = _LOG_LINE.match(line)
            if match and not any(b in line for b in _BENIGN):
                errors.append(match.group("msg").replace('\\"', '"'))
    errors = [msg.split("\\n")[0].strip() for msg in errors]
    for msg in errors:
        if "failed to load" in msg or "already in use" in msg or "Poll failed" in msg:
            return msg
    if errors:
        return errors[-1]
    tail = [line for line in log_text.splitlines() if line.strip()]
    return tail[-1] if tail else "no output"


#: the embedded server's work folder in the temporary directory: <prefix><owner pid>-<random>
WORKDIR_PREFIX = "lesionseg-triton-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_dead_workdirs() -> list[Path]:
    """Remove the work folders of embedded servers whose owning process is gone (killed with
    SIGKILL, which no cleanup survives); returns them. A live owner's folder is kept; so is one
    without an owner pid in its name (made by an older version: its owner cannot be told)."""
    swept = []
    for folder in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        owner = folder.name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
            swept.append(folder)
            logger.info("removed %s, left by a server whose process is gone", folder)
    return swept


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL the server when the process that started it dies, and give the server
    the default SIGINT/SIGTERM dispositions: a parent started in the background by a
    non-interactive shell ignores SIGINT, and an ignored signal stays ignored across exec."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class EmbeddedServer:
    """The bundled `tritonserver` as a child process (CPU, Python backend).

    Use as a context manager: entering starts it and waits until every model is ready, leaving
    stops it (SIGINT, then SIGKILL after `grace_period`). The child dies with its parent.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log_file = None
        self.log_path: Path | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "EmbeddedServer":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def command(self, backend_dir: Path, binary: Path) -> list[str]:
        s = self.settings
        return [
            str(binary),
            f"--model-repository={s.repository}",
            f"--backend-directory={backend_dir}",
            f"--grpc-address={s.host}",
            f"--grpc-port={s.grpc_port}",
            f"--http-address={s.host}",
            f"--http-port={s.http_port}",
            f"--metrics-address={s.host}",
            f"--metrics-port={s.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={max(1, int(s.grace_period))}",
            f"--log-verbose={s.log_verbose}",
            *s.extra_args,
        ]

    def start(self) -> None:
        """Launch the server; returns at once (see `wait_ready`).

        Raises:
            RepositoryError: the repository is missing or not a directory.
            ServerStartError: a port is taken or the binary is missing.
        """
        if self._process is not None:
            raise ServerStartError("the embedded server is already running")
        s = self.settings
        _require_directory(s.repository)
        ports = {"gRPC": s.grpc_port, "HTTP": s.http_port, "metrics": s.metrics_port}
        if len(set(ports.values())) != len(ports):
            raise ServerStartError(f"the gRPC, HTTP and metrics ports must differ (got {ports})")
        for name, number in ports.items():
            if port_in_use(s.host, number):
                raise ServerStartError(f"{name} port {number} on {s.host} is already in use")
        dist = find_distribution()
        sweep_dead_workdirs()
        self._workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
        backend_dir = make_backend_dir(dist, self._workdir)
        self.log_path = self._workdir / "tritonserver.log"
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = self.command(backend_dir, dist.binary)
        logger.info("starting %s", " ".join(cmd))
        self._process = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=server_environment(dist),
            cwd=self._workdir,
            start_new_session=True,  # a terminal's Ctrl-C reaches us; we stop the server ourselves
            preexec_fn=_child_setup,  # noqa: PLW1509
        )

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def _ready(self) -> bool:
        url = f"http://{self.settings.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local http URL
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the server and every model in the repository are ready.

        Raises:
            ServerStartError: the server exited (a model failed to load, a port was taken, ...)
                or was not ready within `timeout` seconds (default `settings.startup_timeout`).
        """
        if self._process is None:
            raise ServerStartError("the embedded server was not started")
        deadline = time.monotonic() + (self.settings.startup_timeout if timeout is None else timeout)
        delay = 0.05
        while True:
            code = self._process.poll()
            if code is not None:
                reason = summarize_failure(self.log_text())
                self._keep_log()
                raise ServerStartError(f"Triton server exited with code {code}: {reason}")
            if self._ready():
                logger.info("Triton ready: gRPC %s, HTTP %s", self.settings.grpc_url, self.settings.http_url)
                return
            if time.monotonic() > deadline:
                self._keep_log()
                raise ServerStartError(
                    f"Triton server not ready after {timeout or self.settings.startup_timeout:.0f} s "
                    f"(log: {self.log_path})"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _keep_log(self) -> None:
        """Keep the log of a failed start so the user can read it; the rest of the workdir goes."""
        if self.log_path is not None and self.log_path.exists():
            kept = Path(tempfile.gettempdir()) / f"lesionseg-tritonserver-{self.pid}.log"
            shutil.copyfile(self.log_path, kept)
            self.log_path = kept

    def stop(self) -> int | None:
        """Stop the server: SIGINT, wait up to `grace_period` s, then SIGKILL. Idempotent.

        Returns:
            The server's exit code, or None when it was not running.
        """
        proc, self._process = self._process, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(self.settings.grace_period)
                except subprocess.TimeoutExpired:
                    logger.warning("Triton did not stop within %.0f s; killing it", self.settings.grace_period)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            code = proc.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return code

    def wait(self) -> int:
        """Block until the server exits by itself; returns its exit code."""
        if self._process is None:
            raise ServerStartError("the embedded server was not started")
        return self._process.wait()
