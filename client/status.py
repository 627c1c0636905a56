"""Talking to a Triton server over gRPC: address parsing, reachability, server and model state."""

from __future__ import annotations

import dataclasses
import re

from lesionseg.core.errors import ServerUnavailableError, UsageError
from lesionseg.core.settings import setting

DEFAULT_URL = "127.0.0.1:8001"
_URL = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-_]+):(?P<port>\d{1,5})$")


def resolve_url(url: str | None) -> str:
    """The gRPC address to use: argument > `LESIONSEG_URL` > 127.0.0.1:8001, checked as HOST:PORT."""
    value = setting("URL", url, DEFAULT_URL)
    value = value.removeprefix("grpc://")
    match = _URL.match(value)
    if not match or not 0 < int(match.group("port")) < 65536:
        raise UsageError(f"server address {value!r} is not HOST:PORT (e.g. 127.0.0.1:8001)")
    return value


def connect(url: str, *, timeout: float = 5.0):
    """A `tritonclient.grpc.InferenceServerClient` for a server known to be live.

    Raises:
        ServerUnavailableError: nothing answers at `url` within `timeout` seconds.
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=url)
    try:
        live = client.is_server_live(client_timeout=timeout)
    except InferenceServerException as exc:
        client.close()
        raise ServerUnavailableError(f"no Triton server at {url}: {exc.message() or exc}") from None
    if not live:
        client.close()
        raise ServerUnavailableError(f"the Triton server at {url} is not live")
    return client


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelState:
    """One model version as the server's repository index reports it."""

    name: str
    version: str
    state: str
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerState:
    url: str
    live: bool
    ready: bool
    version: str
    models: tuple[ModelState, ...]


def server_state(url: str, *, timeout: float = 5.0) -> ServerState:
    """Liveness, readiness, version and every model's state of the server at `url`."""
    client = connect(url, timeout=timeout)
    try:
        ready = client.is_server_ready(client_timeout=timeout)
        metadata = client.get_server_metadata(client_timeout=timeout)
        index = client.get_model_repository_index(client_timeout=timeout)
    finally:
        client.close()
    models = tuple(
        ModelState(name=m.name, version=m.version or "-", state=m.state or "UNKNOWN", reason=m.reason)
        for m in sorted(index.models, key=lambda m: (m.name, m.version))
    )
    return ServerState(url=url, live=True, ready=ready, version=metadata.version, models=models)
