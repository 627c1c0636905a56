"""A Triton server for one command: the one at the URL, or the embedded server started for this run."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

from lesionseg.client.status import connect, resolve_url
from lesionseg.core.errors import ModelNotFoundError, ServerUnavailableError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def server_for_run(url: str | None, *, repository: str | None = None) -> Iterator[str]:
    """Yield the gRPC address of a live server.

    When nothing answers at `url` (argument > LESIONSEG_URL > 127.0.0.1:8001) and it names this
    host, the embedded server is started on free ports with `repository` (> LESIONSEG_REPOSITORY > the default
    model cache), announced on stderr, and stopped when the block ends.

    Raises:
        ServerUnavailableError: nothing answers at a remote `url`, or there is no repository to serve.
    """
    address = resolve_url(url)
    try:
        connect(address, timeout=3).close()
    except ServerUnavailableError:
        from lesionseg.client.connection import is_local_address

        if not is_local_address(address):  # an embedded server here would not be the one asked for
            raise
    else:
        yield address
        return
    from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings, free_port

    chosen: set[int] = set()
    while len(chosen) < 3:
        chosen.add(free_port())
    grpc_port, http_port, metrics_port = sorted(chosen)
    settings = ServerSettings.resolve(repository=repository, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port)
    if not settings.repository.is_dir():
        raise ServerUnavailableError(
            f"no Triton server at {address} and no model repository at {settings.repository} to start one: "
            "install models with 'lesionseg models install sct-legacy' or pass -url")
    print(f"lesionseg: no Triton server at {address}; starting the embedded server for this run "
          f"({settings.repository})", file=sys.stderr, flush=True)
    with EmbeddedServer(settings):
        yield settings.grpc_url


@contextlib.contextmanager
def open_transport(url: str | None, transport=None, *, settings=None) -> Iterator:
    """`transport` when given (a cohort shares one), else a `Transport` to `server_for_run(url)`."""
    if transport is not None:
        yield transport
        return
    from lesionseg.client.connection import Transport

    with server_for_run(url) as address, Transport(address, settings) as opened:
        yield opened


def model_parameters(client, model: str, url: str) -> dict[str, str]:
    """The `parameters` of a served model's config.

    Raises:
        ModelNotFoundError: the server does not serve `model` or it is not ready.
    """
    from tritonclient.utils import InferenceServerException

    try:
        ready = client.is_model_ready(model)
    except InferenceServerException:
        ready = False
    if not ready:
        raise ModelNotFoundError(
            f"model {model!r} is not ready on the server at {url}: install it with 'lesionseg models install' "
            "or 'lesionseg export', then restart the server")
    config = client.get_model_config(model, as_json=True)["config"]
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
