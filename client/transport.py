"""How tensors travel to one Triton server and back, and what its failures mean.

A `Transport` is the link to one server (HOST:PORT): a gRPC client per thread, and one of

* ``shm``: each request's inputs (and the outputs whose shape the caller knows) travel through a
  POSIX shared-memory region registered with the server for that request only
  (`lesionseg.client.shm`);
* ``grpc``: tensors inline in the gRPC message, optionally compressed (gzip or deflate) for remote
  servers on slow links;
* ``auto`` (default): ``shm`` when the address is this host and the server accepts a probe
  region, else ``grpc``.

Failures are classified by their gRPC status code (`classify`): the server being away (a retry
after it is back may succeed) is a `ServerUnavailableError`, a model it does not serve a
`ModelNotFoundError`, anything else the server answered an `InferenceError`. Which server to use
and when to retry is not decided here (`lesionseg.client.servers`). Settings: argument >
`LESIONSEG_TRANSPORT` / `LESIONSEG_COMPRESSION` > default.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lesionseg.client import shm
from lesionseg.client.address import is_local_address
from lesionseg.core.enums import StrEnum, choices
from lesionseg.core.errors import InferenceError, LesionsegError, ModelNotFoundError, ServerUnavailableError, UsageError
from lesionseg.core.settings import setting

logger = logging.getLogger(__name__)


class TransportKind(StrEnum):
    AUTO, SHM, GRPC = "auto", "shm", "grpc"


class Compression(StrEnum):
    NONE, GZIP, DEFLATE = "none", "gzip", "deflate"


#: gRPC status codes of a server that is away (restarting, unreachable, connection lost)
UNAVAILABLE_CODES = frozenset({"UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED"})
#: the status code of a request for a model the server does not serve (now)
NOT_FOUND_CODE = "NOT_FOUND"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransportSettings:
    """`transport` (auto, shm or grpc) and `compression` (none, gzip, deflate) of gRPC payloads."""

    transport: TransportKind = TransportKind.AUTO
    compression: Compression = Compression.NONE

    def __post_init__(self) -> None:
        for name, kind in (("transport", TransportKind), ("compression", Compression)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError:
                raise UsageError(f"{name} {value!r} is not one of {', '.join(choices(kind))}") from None

    @classmethod
    def resolve(cls, *, transport: str | None = None, compression: str | None = None) -> "TransportSettings":
        return cls(transport=setting("TRANSPORT", transport, TransportKind.AUTO),  # type: ignore[arg-type]
                   compression=setting("COMPRESSION", compression, Compression.NONE))  # type: ignore[arg-type]


def status_code(exc: BaseException) -> str:
    """The gRPC status code name of a tritonclient error ("UNAVAILABLE", ...; "" when none)."""
    status = getattr(exc, "status", None)
    text = str(status() if callable(status) else status or "")
    return text.rpartition(".")[2]


def classify(exc: BaseException, *, address: str, source: Path | str, model: str = "") -> LesionsegError:
    """The lesionseg error a failed call to the server at `address` means, by its status code;
    the message names `source` (the input) and says what the server said."""
    code = status_code(exc)
    message = getattr(exc, "message", None)
    text = (message() if callable(message) else "") or str(exc)
    if code in UNAVAILABLE_CODES:
        return ServerUnavailableError(f"{source}: the server at {address} is unavailable ({text})")
    if code == NOT_FOUND_CODE:  # it answered but does not serve the model (now): restarting, or never
        return ServerUnavailableError(f"{source}: the server at {address} does not serve {model or 'the model'} now ({text})")
    return InferenceError(f"{source}: {text}")


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


class Transport:
    """Tensors to and from one server (`address` HOST:PORT, known to be live), over shm or gRPC.
    Safe to share between threads: each thread gets its own gRPC client."""

    def __init__(self, address: str, settings: TransportSettings | None = None) -> None:
        self.address = address
        self.settings = settings or TransportSettings.resolve()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list = []
        self.kind = self._choose()
        logger.info("connection to %s: %s", address, self.kind)

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

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _choose(self) -> TransportKind:
        wanted = self.settings.transport
        if wanted == TransportKind.GRPC:
            return TransportKind.GRPC
        local = is_local_address(self.address)
        if not local and wanted == TransportKind.SHM:
            raise UsageError(f"--transport shm needs a server on this host; {self.address} is not")
        if local:
            problem = shm.probe(self.client())
            if problem is None:
                shm.clear_stale(self.client())
                return TransportKind.SHM
            if wanted == TransportKind.SHM:
                raise ServerUnavailableError(f"the server at {self.address} cannot use system shared memory: {problem}")
            logger.info("shared memory unavailable (%s); using gRPC", problem)
        return TransportKind.GRPC

    # -- model information and health --------------------------------------------------------

    def model_config(self, model: str) -> dict[str, Any]:
        """The served `model`'s config (Triton's JSON form).

        Raises:
            ModelNotFoundError: the server does not serve `model`, or it is not ready.
            ServerUnavailableError: the server went away.
        """
        from tritonclient.utils import InferenceServerException

        if not self.is_ready(model):
            raise ModelNotFoundError(
                f"model {model!r} is not ready on the server at {self.address}: install it with 'lesionseg models install' "
                "or 'lesionseg export', then restart the server")
        try:
            return self.client().get_model_config(model, as_json=True)["config"]
        except InferenceServerException as exc:
            raise classify(exc, address=self.address, source=self.address, model=model) from None

    def is_ready(self, model: str | None = None, *, timeout: float | None = None) -> bool:
        """Whether the server is live (and `model` ready); False when it does not answer."""
        try:
            if model is None:
                return bool(self.client().is_server_live(client_timeout=timeout))
            return bool(self.client().is_model_ready(model, client_timeout=timeout))
        except Exception:  # noqa: BLE001 - unavailable, refused, timed out: not ready
            return False

    # -- inference ----------------------------------------------------------------------------

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], *, source: Path | str,
              output_shapes: Mapping[str, tuple[tuple[int, ...], np.dtype]] | None = None) -> dict[str, np.ndarray]:
        """Run `model` on `inputs` (name -> array); return the named `outputs`.

        `output_shapes` (name -> (shape, dtype)) lets those outputs come back through shared
        memory too; others come inline. `source` names the input in error messages.

        Raises:
            ServerUnavailableError: the server went away (a retry after it is back may succeed).
            InferenceError: the server rejected the request.
        """
        from tritonclient.utils import InferenceServerException

        arrays = {name: np.ascontiguousarray(a) for name, a in inputs.items()}
        try:
            if self.kind == TransportKind.SHM:
                return self._infer_shm(model, arrays, outputs, dict(output_shapes or {}))
            return self._infer_grpc(model, arrays, outputs)
        except InferenceServerException as exc:
            raise classify(exc, address=self.address, source=source, model=model) from None

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
        compression = None if self.settings.compression == Compression.NONE else str(self.settings.compression)
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
