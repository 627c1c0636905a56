"""Which Triton server does the work: one `-url` becomes one `ServerPool`, whatever it names.

`open_servers(url)` is the one way in. The url is HOST:PORT, several of them comma-separated, or a
DNS name that resolves to several addresses (a Kubernetes headless Service); argument >
`LESIONSEG_URL` > 127.0.0.1:8001. When it names one address on this host where nothing answers,
the embedded server (`start_embedded`) is started for the block, announced on stderr.

A pool sends each piece of work (`run`) to the healthy server with the fewest requests in flight.
A server that fails (unavailable, connection lost) is taken out and the work fails with
`ServerUnavailableError`, for the caller to retry (on another server, or when `wait_ready` says
one is back); a background check every `CHECK_SECONDS` brings servers back once they answer with
the models asked for ready, and re-resolves names so that new pods join. gRPC's own load
balancing would pin one channel to one pod, which is why the client spreads calls itself.

Each `Server` parses a served model's configuration once into a `ModelInfo`
(`lesionseg.core.interface`) and keeps it; its `Transport` moves the tensors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from lesionseg.client.address import expand, is_local_address, split_urls
from lesionseg.client.transport import Transport, TransportSettings, live_client
from lesionseg.core.errors import ServerUnavailableError
from lesionseg.core.interface import ModelInfo

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds between checks of servers that failed, and between DNS re-resolutions
CHECK_SECONDS = 2.0


@dataclasses.dataclass(eq=False)
class Server:
    """One Triton server of a pool: its transport (once it answered), the configurations of the
    models asked of it (parsed once), and its health."""

    address: str
    transport: Transport | None = None
    healthy: bool = False
    in_flight: int = 0
    served: int = 0
    failures: int = 0
    models: dict[str, ModelInfo] = dataclasses.field(default_factory=dict)

    def model(self, name: str) -> ModelInfo:
        """`name`'s configuration on this server, fetched and parsed the first time.

        Raises:
            ModelNotFoundError: the server does not serve it; ServerUnavailableError.
        """
        info = self.models.get(name)
        if info is None:
            assert self.transport is not None  # a pool hands out answering servers only
            info = self.models[name] = ModelInfo.from_config(self.transport.model_config(name))
        return info


class ServerPool:
    """The servers of a `-url` (see the module docstring); `run(work)` calls `work(server)` on the
    least busy healthy one. With `wait`, a pool may start with no server answering (a long-lived
    service waits for them); otherwise that is a `ServerUnavailableError`."""

    def __init__(self, url: str | None = None, settings: TransportSettings | None = None, *,
                 check_seconds: float = CHECK_SECONDS, wait: bool = False) -> None:
        self.entries = split_urls(url)
        self.settings = settings or TransportSettings.resolve()
        self.check_seconds = check_seconds
        self.required: set[str] = set()
        self._lock = threading.Condition()
        self.servers: dict[str, Server] = {}
        for entry in self.entries:
            for address in expand(entry):
                self.servers[address] = Server(address=address)
        self._stop = threading.Event()
        problems = [self._check(server) for server in list(self.servers.values())]
        if not wait and not any(s.healthy for s in self.servers.values()):
            if len(self.servers) == 1 and problems[0]:
                raise problems[0]
            raise ServerUnavailableError(f"no Triton server answers at {', '.join(self.servers)}")
        self._thread = threading.Thread(target=self._watch, name="lesionseg-servers", daemon=True)
        self._thread.start()

    # -- choosing and failing over --------------------------------------------------------------

    @contextlib.contextmanager
    def lease(self) -> Iterator[Server]:
        """The healthy server with the fewest requests in flight, counted while the block runs.

        Raises:
            ServerUnavailableError: no server is healthy now.
        """
        with self._lock:
            healthy = [s for s in self.servers.values() if s.healthy and s.transport is not None]
            if not healthy:
                raise ServerUnavailableError(f"no healthy Triton server among {', '.join(self.servers)}")
            server = min(healthy, key=lambda s: (s.in_flight, s.served))
            server.in_flight += 1
        try:
            yield server
        finally:
            with self._lock:
                server.in_flight -= 1

    def run(self, work: Callable[[Server], T]) -> tuple[T, str]:
        """`work(server)` on one server; returns (its result, the server's address).

        Raises:
            ServerUnavailableError: that server failed (it is taken out; a retry goes elsewhere)
                or none is healthy.
        """
        with self.lease() as server:
            try:
                result = work(server)
            except ServerUnavailableError:
                self._fail(server)
                raise
            with self._lock:
                server.served += 1
            return result, server.address

    def model(self, name: str) -> ModelInfo:
        """`name`'s configuration (from a healthy server); the pool's health checks now require it ready.

        Raises:
            ModelNotFoundError: not served; ServerUnavailableError: no server is healthy.
        """
        with self._lock:
            self.required.add(name)
        return self.run(lambda server: server.model(name))[0]

    def serves(self, name: str) -> bool:
        """Whether a healthy server has model `name` ready (the pool requires nothing more of it)."""
        return self.run(lambda server: bool(server.transport and server.transport.is_ready(name, timeout=5)))[0]

    def wait_ready(self, timeout: float) -> bool:
        """Block until some server is healthy again, or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not any(s.healthy for s in self.servers.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.5))
        return True

    def _fail(self, server: Server) -> None:
        with self._lock:
            if server.healthy:
                logger.warning("Triton server %s failed; sending its work to the others", server.address)
            server.healthy = False
            server.failures += 1
            server.models.clear()  # a server that comes back may serve other versions

    # -- health ------------------------------------------------------------------------------

    def _check(self, server: Server) -> ServerUnavailableError | None:
        """Mark `server` healthy when it answers with every required model ready; else say why not."""
        try:
            client = live_client(server.address, timeout=2)
        except ServerUnavailableError as exc:
            return exc
        try:
            with self._lock:
                required = sorted(self.required)
            missing = [m for m in required if not client.is_model_ready(m, client_timeout=2)]
        except Exception as exc:  # noqa: BLE001 - unavailable, refused, timed out: "not back yet"
            return ServerUnavailableError(f"the Triton server at {server.address} does not answer ({exc})")
        finally:
            client.close()
        if missing:
            return ServerUnavailableError(f"the Triton server at {server.address} does not serve {', '.join(missing)} yet")
        transport = server.transport or Transport(server.address, self.settings)
        with self._lock:
            server.transport = transport
            if not server.healthy:
                logger.info("Triton server %s is %s", server.address, "back" if server.failures else "ready")
            server.healthy = True
            self._lock.notify_all()
        return None

    def _watch(self) -> None:
        while not self._stop.wait(self.check_seconds):
            for entry in self.entries:
                for address in expand(entry):
                    with self._lock:
                        if address not in self.servers:
                            self.servers[address] = Server(address=address)
                            logger.info("Triton server %s joined (DNS %s)", address, entry)
            for server in list(self.servers.values()):
                if not server.healthy:
                    self._check(server)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for server in self.servers.values():
            if server.transport is not None:
                server.transport.close()

    def __enter__(self) -> "ServerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def embedded_settings(repository: str | Path | None = None):
    """`ServerSettings` of an embedded server on free ports serving `repository` (> LESIONSEG_REPOSITORY
    > the default model cache)."""
    from lesionseg.server.launch.embedded import ServerSettings, free_ports

    grpc_port, http_port, metrics_port = free_ports(3)
    return ServerSettings.resolve(repository=repository, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port)


@contextlib.contextmanager
def start_embedded(settings) -> Iterator[str]:
    """The embedded Triton server of `settings` (`embedded_settings`) for the block; yields its gRPC address.

    Raises:
        RepositoryError, ServerStartError: it could not start.
    """
    from lesionseg.server.launch.embedded import EmbeddedServer

    with EmbeddedServer(settings):
        logger.info("embedded Triton serving %s at %s", settings.repository, settings.grpc_url)
        yield settings.grpc_url


@contextlib.contextmanager
def open_servers(url: str | None = None, settings: TransportSettings | None = None, *,
                 repository: str | Path | None = None, wait: bool = False) -> Iterator[ServerPool]:
    """The `ServerPool` of `url` for the block (see the module docstring); one local address where
    nothing answers gets the embedded server serving `repository`.

    Raises:
        ServerUnavailableError: nothing answers (and there is no repository to start the embedded
            server with); UsageError: a malformed url.
    """
    entries = split_urls(url)
    single = entries[0] if len(entries) == 1 and len(expand(entries[0])) == 1 else None
    if single is not None and not wait and is_local_address(single):
        try:
            live_client(single, timeout=3).close()
        except ServerUnavailableError:
            server = embedded_settings(repository)
            if not server.repository.is_dir():
                raise ServerUnavailableError(
                    f"no Triton server at {single} and no model repository at {server.repository} to start one: "
                    "install models with 'lesionseg models install sct-legacy' or pass -url") from None
            print(f"lesionseg: no Triton server at {single}; starting the embedded server for this run "
                  f"({server.repository})", file=sys.stderr, flush=True)
            with start_embedded(server) as address, ServerPool(address, settings) as pool:
                yield pool
            return
    with ServerPool(url, settings, wait=wait) as pool:
        yield pool
