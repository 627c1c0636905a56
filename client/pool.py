"""Several Triton servers behind one `-url`: `host1:8001,host2:8001`, or a DNS name that resolves
to several addresses (a Kubernetes headless Service). Work goes to the healthy server with the
fewest requests in flight; a server that fails (unavailable, connection lost) is taken out and
its subject retried elsewhere; a background check brings it back when it answers again, and
re-resolves DNS names so new pods join.

gRPC's own load balancing would pin a channel to one pod (one HTTP/2 connection carries every
call), which is why a headless Service needs the client to spread calls itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from typing import Callable, Iterator, TypeVar

from lesionseg.client.address import DEFAULT_URL, resolve_url
from lesionseg.client.connection import Connection, ConnectionSettings, live_client
from lesionseg.core.errors import ServerUnavailableError, UsageError
from lesionseg.core.settings import setting

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds between checks of servers that failed, and between DNS re-resolutions
CHECK_SECONDS = 2.0


def split_urls(url: str | None) -> list[str]:
    """The HOST:PORT entries of a `-url` value (argument > LESIONSEG_URL > default), comma-separated.

    Raises:
        UsageError: an entry is not HOST:PORT, or one appears twice.
    """
    text = setting("URL", url, DEFAULT_URL)
    entries = [resolve_url(part.strip()) for part in text.split(",") if part.strip()]
    if not entries:
        raise UsageError("-url names no server")
    if len(set(entries)) != len(entries):
        raise UsageError(f"-url {text!r} names a server twice")
    return entries


def is_multi(url: str | None) -> bool:
    """Whether `-url` names several servers (a list, or a name resolving to several addresses)."""
    entries = split_urls(url)
    return len(entries) > 1 or len(expand(entries[0])) > 1


def expand(entry: str) -> list[str]:
    """`entry` as one HOST:PORT per address its host name resolves to (an IP address: itself)."""
    host, port = entry.rsplit(":", 1)
    bare = host.strip("[]")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in bare else socket.AF_INET, bare)
        return [entry]
    except OSError:
        pass
    try:
        infos = socket.getaddrinfo(bare, int(port), type=socket.SOCK_STREAM)
    except OSError:
        return [entry]  # unresolvable now: kept, and found down by the health check
    addresses = sorted({info[4][0] for info in infos})
    if len(addresses) <= 1 or bare == "localhost":
        return [entry]
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]


@dataclasses.dataclass
class Endpoint:
    address: str
    healthy: bool = True
    in_flight: int = 0
    served: int = 0
    failures: int = 0
    link: Connection | None = None


class ServerPool:
    """The servers of a `-url`; `run(work)` calls `work(connection)` on the least busy healthy one."""

    def __init__(self, url: str | None, settings: ConnectionSettings | None = None, *, model: str | None = None,
                 check_seconds: float = CHECK_SECONDS) -> None:
        self.entries = split_urls(url)
        self.settings = settings or ConnectionSettings.resolve()
        self.model = model
        self.check_seconds = check_seconds
        self._lock = threading.Condition()
        self.endpoints: dict[str, Endpoint] = {}
        for entry in self.entries:
            for address in expand(entry):
                self.endpoints[address] = Endpoint(address=address, healthy=False)
        self._stop = threading.Event()
        for endpoint in list(self.endpoints.values()):
            self._check(endpoint)
        if not any(e.healthy for e in self.endpoints.values()):
            raise ServerUnavailableError(f"no Triton server answers at {', '.join(self.endpoints)}")
        self._thread = threading.Thread(target=self._watch, name="lesionseg-pool", daemon=True)
        self._thread.start()

    # -- choosing and failing over --------------------------------------------------------------

    @contextlib.contextmanager
    def lease(self) -> Iterator[Endpoint]:
        """The healthy endpoint with the fewest requests in flight, counted while the block runs.

        Raises:
            ServerUnavailableError: no server is healthy now.
        """
        with self._lock:
            healthy = [e for e in self.endpoints.values() if e.healthy and e.link is not None]
            if not healthy:
                raise ServerUnavailableError(f"no healthy Triton server among {', '.join(self.endpoints)}")
            endpoint = min(healthy, key=lambda e: (e.in_flight, e.served))
            endpoint.in_flight += 1
        try:
            yield endpoint
        finally:
            with self._lock:
                endpoint.in_flight -= 1

    def run(self, work: Callable[[Connection], T]) -> tuple[T, str]:
        """`work(connection)` on one server; returns (its result, the server's address).

        Raises:
            ServerUnavailableError: that server failed (it is taken out; a retry goes elsewhere)
                or none is healthy.
        """
        with self.lease() as endpoint:
            try:
                result = work(endpoint.link)  # type: ignore[arg-type]
            except ServerUnavailableError:
                self._fail(endpoint)
                raise
            with self._lock:
                endpoint.served += 1
            return result, endpoint.address

    def any_link(self) -> Connection:
        """A healthy server's connection (planning, model checks)."""
        with self.lease() as endpoint:
            return endpoint.link  # type: ignore[return-value]

    def wait_ready(self, timeout: float) -> bool:
        """Block until some server is healthy again, or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not any(e.healthy for e in self.endpoints.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.5))
        return True

    def _fail(self, endpoint: Endpoint) -> None:
        with self._lock:
            if endpoint.healthy:
                logger.warning("Triton server %s failed; sending its work to the others", endpoint.address)
            endpoint.healthy = False
            endpoint.failures += 1

    # -- health ------------------------------------------------------------------------------

    def _check(self, endpoint: Endpoint) -> None:
        try:
            client = live_client(endpoint.address, timeout=2)
            try:
                ready = self.model is None or client.is_model_ready(self.model, client_timeout=2)
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - unavailable, refused, timed out: "not back yet"
            ready = False
        if not ready:
            return
        link = endpoint.link
        if link is None:
            try:
                link = Connection(endpoint.address, self.settings)
            except ServerUnavailableError:
                return
        with self._lock:
            endpoint.link = link
            if not endpoint.healthy:
                logger.info("Triton server %s is %s", endpoint.address, "back" if endpoint.failures else "ready")
            endpoint.healthy = True
            self._lock.notify_all()

    def _watch(self) -> None:
        while not self._stop.wait(self.check_seconds):
            for entry in self.entries:
                for address in expand(entry):
                    with self._lock:
                        if address not in self.endpoints:
                            self.endpoints[address] = Endpoint(address=address, healthy=False)
                            logger.info("Triton server %s joined (DNS %s)", address, entry)
            for endpoint in list(self.endpoints.values()):
                if not endpoint.healthy:
                    self._check(endpoint)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for endpoint in self.endpoints.values():
            if endpoint.link is not None:
                endpoint.link.close()

    def __enter__(self) -> "ServerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
