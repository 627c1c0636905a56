"""A server's health and models, as `lesionseg status` reports them."""

from __future__ import annotations

import dataclasses

from lesionseg.client.connection import live_client


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

    @property
    def ready_models(self) -> list[str]:
        """The names of the models that are READY, sorted."""
        return sorted({m.name for m in self.models if m.state == "READY"})


def server_state(url: str, *, timeout: float = 5.0) -> ServerState:
    """Liveness, readiness, version and every model's state of the server at `url` (HOST:PORT).

    Raises:
        ServerUnavailableError: nothing answers at `url`.
    """
    client = live_client(url, timeout=timeout)
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
