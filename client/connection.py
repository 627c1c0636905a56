"""The connection: how the client reaches a Triton server for a whole run (one image or a cohort).

`connect(url)` yields a `Connection` to the live server at `url`; when nothing answers there and
the address names this host, it starts the embedded server for the run (announced on stderr) and
stops it afterwards. A `Connection` sends volumes and receives masks:

* transport ``shm``: each request's inputs (and the outputs whose shape the caller knows) travel
  through a POSIX shared-memory region registered with the server for that request only
  (`lesionseg.client.shm`);
* transport ``grpc``: tensors inline in the gRPC message, optionally compressed (gzip or
  deflate) for remote servers on slow links;
* ``auto`` (default): ``shm`` when the address is this host and the server accepts a probe
  region, else ``grpc``.

Inputs are NumPy arrays in the model's own axis order (the caller reorients first, see
`lesionseg.client.inference`); outputs come back with the server's dtypes (see
`lesionseg.core.wire`). Settings: argument > `LESIONSEG_TRANSPORT` / `LESIONSEG_COMPRESSION` >
default. A connection is safe to share between threads: each thread gets its own gRPC client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from lesionseg.client import shm
from lesionseg.client.address import DEFAULT_URL, is_local_address, resolve_url
from lesionseg.core.errors import InferenceError, ModelNotFoundError, ServerUnavailableError, UsageError
from lesionseg.core.settings import setting

logger = logging.getLogger(__name__)

TRANSPORTS = ("auto", "shm", "grpc")
COMPRESSIONS = ("none", "gzip", "deflate")
# gRPC status codes that mean "the server went away", not "the request was bad".
_TRANSIENT = ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED")
_TRANSIENT_TEXT = ("failed to connect", "Socket closed", "Connection reset", "connection refused", "Broken pipe",
                   "unknown model", "is not ready")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionSettings:
    """`transport` is auto, shm or grpc; `compression` (none, gzip, deflate) applies to gRPC payloads."""

    transport: str = "auto"
    compression: str = "none"

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise UsageError(f"transport {self.transport!r} is not one of {', '.join(TRANSPORTS)}")
        if self.compression not in COMPRESSIONS:
            raise UsageError(f"compression {self.compression!r} is not one of {', '.join(COMPRESSIONS)}")

    @classmethod
    def resolve(cls, *, transport: str | None = None, compression: str | None = None) -> "ConnectionSettings":
        return cls(transport=setting("TRANSPORT", transport, "auto"), compression=setting("COMPRESSION", compression, "none"))


def is_transient(exc: BaseException) -> bool:
    """Whether a tritonclient error means the server is (temporarily) gone, so a retry may succeed."""
    status = str(getattr(exc, "status", lambda: "")() or "")
    text = str(getattr(exc, "message", lambda: "")() or exc)
    return status in _TRANSIENT or any(t.lower() in text.lower() for t in _TRANSIENT_TEXT)


def live_client(address: str, *, timeout: float = 5.0):
    """A `tritonclient.grpc.InferenceServerClient` for the server at `address`, checked live.

    Raises:
        ServerUnavailableError: nothing answers at `address` within `timeout` seconds.
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=address)
    try:
        live = client.is_server_live(client_timeout=timeout)
    except InferenceServerException as exc:
        client.close()
        raise ServerUnavailableError(f"no Triton server at {address}: {exc.message() or exc}") from None
    if not live:
        client.close()
        raise ServerUnavailableError(f"the Triton server at {address} is not live")
    return client


class Connection:
    """Inference calls to one server (`address` HOST:PORT, known to be live) over shm or gRPC."""

    def __init__(self, address: str, settings: ConnectionSettings | None = None) -> None:
        self.address = address
        self.settings = settings or ConnectionSettings.resolve()
        self._local = threading.local()
        self._params: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._clients: list = []
        self.transport = self._choose_transport()
        logger.info("connection to %s: %s", address, self.transport)

    # -- gRPC clients --------------------------------------------------------------------------
    def client(self):
        """This thread's `tritonclient.grpc.InferenceServerClient`."""
        client = getattr(self._local, "client", None)
        if client is None:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(self.address)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()
        self._local = threading.local()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _choose_transport(self) -> str:
        if self.settings.transport == "grpc":
            return "grpc"
        local = is_local_address(self.address)
        if not local and self.settings.transport == "shm":
            raise UsageError(f"--transport shm needs a server on this host; {self.address} is not")
        if local:
            problem = shm.probe(self.client())
            if problem is None:
                shm.clear_stale(self.client())
                return "shm"
            if self.settings.transport == "shm":
                raise ServerUnavailableError(f"the server at {self.address} cannot use system shared memory: {problem}")
            logger.info("shared memory unavailable (%s); using gRPC", problem)
        return "grpc"

    # -- model information ---------------------------------------------------------------------
    def parameters(self, model: str) -> dict[str, str]:
        """The served `model`'s config parameters (cached for the connection's life).

        Raises:
            ModelNotFoundError: the server does not serve `model` or it is not ready.
        """
        with self._lock:
            cached = self._params.get(model)
        if cached is None:
            cached = self._fetch_parameters(model)
            with self._lock:
                self._params[model] = cached
        return cached

    def _fetch_parameters(self, model: str) -> dict[str, str]:
        from tritonclient.utils import InferenceServerException

        client = self.client()
        try:
            ready = client.is_model_ready(model)
        except InferenceServerException:
            ready = False
        if not ready:
            raise ModelNotFoundError(
                f"model {model!r} is not ready on the server at {self.address}: install it with 'lesionseg models install' "
                "or 'lesionseg export', then restart the server")
        config = client.get_model_config(model, as_json=True)["config"]
        return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}

    def wait_ready(self, model: str, timeout: float) -> bool:
        """Poll until the server is live and `model` ready again (after a restart); False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.client().is_server_live(client_timeout=2) and self.client().is_model_ready(model, client_timeout=2):
                    return True
            except Exception:  # noqa: BLE001 - not back yet
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)

    # -- inference -----------------------------------------------------------------------------
    def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], *, source: Path | str,
              output_shapes: Mapping[str, tuple[tuple[int, ...], np.dtype]] | None = None) -> dict[str, np.ndarray]:
        """Run `model` on `inputs` (name -> array); return the named `outputs`.

        `output_shapes` (name -> (shape, dtype)) lets those outputs come back through shared
        memory too; others come inline. `source` names the input file in error messages.

        Raises:
            ServerUnavailableError: the server went away (a retry after it is back may succeed).
            InferenceError: the server rejected the request.
        """
        from tritonclient.utils import InferenceServerException

        arrays = {name: np.ascontiguousarray(a) for name, a in inputs.items()}
        try:
            if self.transport == "shm":
                return self._infer_shm(model, arrays, outputs, dict(output_shapes or {}))
            return self._infer_grpc(model, arrays, outputs)
        except InferenceServerException as exc:
            message = exc.message() or str(exc)
            if is_transient(exc):
                raise ServerUnavailableError(f"{source}: the server at {self.address} is unavailable ({message})") from None
            raise InferenceError(f"{source}: {message}") from None

    def _inputs(self, arrays: Mapping[str, np.ndarray]):
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import np_to_triton_dtype

        return {name: grpcclient.InferInput(name, list(a.shape), np_to_triton_dtype(a.dtype)) for name, a in arrays.items()}

    def _infer_grpc(self, model, arrays, outputs) -> dict[str, np.ndarray]:
        import tritonclient.grpc as grpcclient

        tensors = self._inputs(arrays)
        for name, tensor in tensors.items():
            tensor.set_data_from_numpy(arrays[name])
        requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
        compression = None if self.settings.compression == "none" else self.settings.compression
        result = self.client().infer(model, list(tensors.values()), outputs=requested, compression_algorithm=compression)
        return {name: result.as_numpy(name) for name in outputs}

    def _infer_shm(self, model, arrays, outputs, shapes) -> dict[str, np.ndarray]:
        import tritonclient.grpc as grpcclient

        client = self.client()
        out_bytes = {name: int(np.prod(shape)) * np.dtype(dtype).itemsize for name, (shape, dtype) in shapes.items()}
        region = shm.Region(client, sum(a.nbytes for a in arrays.values()) + sum(out_bytes.values()))
        try:
            tensors = self._inputs(arrays)
            for name, tensor in tensors.items():
                tensor.set_shared_memory(region.name, arrays[name].nbytes, offset=region.put(arrays[name]))
            requested, offsets = [], {}
            for name in outputs:
                out = grpcclient.InferRequestedOutput(name)
                if name in shapes and out_bytes[name] > 0:
                    offsets[name] = region.take(out_bytes[name])
                    out.set_shared_memory(region.name, out_bytes[name], offset=offsets[name])
                requested.append(out)
            region.register()
            result = client.infer(model, list(tensors.values()), outputs=requested)
            values = {}
            for name in outputs:
                if name in offsets:
                    shape, dtype = shapes[name]
                    values[name] = region.read(dtype, shape, offsets[name])
                else:
                    values[name] = result.as_numpy(name)
            return values
        finally:
            region.close()


@contextlib.contextmanager
def connect(url: str | None = None, settings: ConnectionSettings | None = None, *,
            repository: str | Path | None = None) -> Iterator[Connection]:
    """A `Connection` to the live server at `url` (argument > LESIONSEG_URL > 127.0.0.1:8001).

    When nothing answers there and the address names this host, the embedded server is started on
    free ports with `repository` (> LESIONSEG_REPOSITORY > the default model cache), announced on
    stderr, and stopped when the block ends.

    Raises:
        ServerUnavailableError: nothing answers at a remote `url`, or there is no repository to serve.
    """
    text = setting("URL", url, DEFAULT_URL)
    if "," in text:  # several servers: one image goes to the first that answers
        for entry in text.split(","):
            address = resolve_url(entry.strip())
            try:
                live_client(address, timeout=3).close()
            except ServerUnavailableError:
                continue
            with Connection(address, settings) as connection:
                yield connection
            return
        raise ServerUnavailableError(f"no Triton server answers at {text}")
    address = resolve_url(text)
    try:
        live_client(address, timeout=3).close()
    except ServerUnavailableError:
        if not is_local_address(address):  # an embedded server here would not be the one asked for
            raise
    else:
        with Connection(address, settings) as connection:
            yield connection
        return
    from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings, free_ports

    grpc_port, http_port, metrics_port = free_ports(3)
    server = ServerSettings.resolve(repository=repository, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port)
    if not server.repository.is_dir():
        raise ServerUnavailableError(
            f"no Triton server at {address} and no model repository at {server.repository} to start one: "
            "install models with 'lesionseg models install sct-legacy' or pass -url")
    print(f"lesionseg: no Triton server at {address}; starting the embedded server for this run "
          f"({server.repository})", file=sys.stderr, flush=True)
    with EmbeddedServer(server), Connection(server.grpc_url, settings) as connection:
        yield connection
