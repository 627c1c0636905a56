"""A server's health and models, as `lesionseg status` reports them."""

from __future__ import annotations

import dataclasses

from lesionseg.client.transport import live_client


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelState:
    """One model version as the server's repository index reports it."""

    name: str
    version: str
    state: str
    reason: str
    #: with `details`: the precision the model's config says ("fp32" when it says none) and its
    #: parity report's one-line summary ("" for FP32), for READY models
    precision: str = ""
    parity: str = ""


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


def server_state(url: str, *, timeout: float = 5.0, details: bool = False) -> ServerState:
    """Liveness, readiness, version and every model's state of the server at `url` (HOST:PORT);
    with `details`, each READY model's precision and parity summary from its loaded config.

    Raises:
        ServerUnavailableError: nothing answers at `url`.
    """
    client = live_client(url, timeout=timeout)
    try:
        ready = client.is_server_ready(client_timeout=timeout)
        metadata = client.get_server_metadata(client_timeout=timeout)
        index = client.get_model_repository_index(client_timeout=timeout)
        models = []
        for m in sorted(index.models, key=lambda m: (m.name, m.version)):
            extra = {}
            if details and m.state == "READY":
                config = client.get_model_config(m.name, m.version, client_timeout=timeout).config
                extra = {"precision": config.parameters["precision"].string_value if "precision" in config.parameters else "fp32",
                         "parity": config.parameters["parity"].string_value if "parity" in config.parameters else ""}
            models.append(ModelState(name=m.name, version=m.version or "-", state=m.state or "UNKNOWN", reason=m.reason, **extra))
    finally:
        client.close()
    return ServerState(url=url, live=True, ready=ready, version=metadata.version, models=tuple(models))
