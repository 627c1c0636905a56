"""How volumes reach the server: Triton system shared memory on the same host, else gRPC.

`Transport` wraps one server address for a whole run (one image or a cohort). Inputs are NumPy
arrays in the model's own axis order (the caller reorients first); outputs come back as NumPy
arrays with the server's dtypes. Masks and probabilities are UINT8 and images at most
`nifti.MAX_VOXELS` FP32 voxels (1 GiB), so no message comes near gRPC's 2 GiB cap.

* ``shm``: each request's inputs (and the outputs whose shape the caller knows) travel through a
  POSIX shared-memory region `/lesionseg_<pid>_<n>` registered with the server for that request
  and unregistered and unlinked afterwards, whatever happens, so nothing leaks.
* ``grpc``: tensors inline in the gRPC message, optionally compressed (gzip or deflate) for
  remote servers on slow links.
* ``auto`` (default): ``shm`` when the address is this host and the server accepts a probe
  region, else ``grpc``.

Setting precedence: argument > `LESIONSEG_TRANSPORT` / `LESIONSEG_COMPRESSION` > default.
A transport is safe to share between threads: each thread gets its own gRPC client.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lesionseg.core.errors import InferenceError, ServerUnavailableError, UsageError
from lesionseg.core.settings import setting

logger = logging.getLogger(__name__)

MODES = ("auto", "shm", "grpc")
COMPRESSIONS = ("none", "gzip", "deflate")
SHM_PREFIX = "lesionseg_"
_counter = itertools.count()
_counter_lock = threading.Lock()
# gRPC status codes that mean "the server went away", not "the request was bad".
_TRANSIENT = ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED")
_TRANSIENT_TEXT = ("failed to connect", "Socket closed", "Connection reset", "connection refused", "Broken pipe",
                   "unknown model", "is not ready")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransportSettings:
    """`mode` is auto, shm or grpc; `compression` (none, gzip, deflate) applies to gRPC payloads."""

    mode: str = "auto"
    compression: str = "none"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"transport {self.mode!r} is not one of {', '.join(MODES)}")
        if self.compression not in COMPRESSIONS:
            raise UsageError(f"compression {self.compression!r} is not one of {', '.join(COMPRESSIONS)}")

    @classmethod
    def resolve(cls, *, mode: str | None = None, compression: str | None = None) -> "TransportSettings":
        return cls(mode=setting("TRANSPORT", mode, "auto"), compression=setting("COMPRESSION", compression, "none"))


def is_local_address(address: str) -> bool:
    """Whether HOST:PORT names this machine (loopback, or an address of one of its interfaces)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", "0.0.0.0", "::"):
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    ips = {info[4][0] for info in infos}
    if any(ipaddress.ip_address(ip.split("%")[0]).is_loopback for ip in ips):
        return True
    try:
        local = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        local = set()
    return bool(ips & local)


def _shm():
    import tritonclient.utils.shared_memory as shm

    return shm


def is_transient(exc: BaseException) -> bool:
    """Whether a tritonclient error means the server is (temporarily) gone, so a retry may succeed."""
    status = str(getattr(exc, "status", lambda: "")() or "")
    text = str(getattr(exc, "message", lambda: "")() or exc)
    return status in _TRANSIENT or any(t.lower() in text.lower() for t in _TRANSIENT_TEXT)


class _Region:
    """One request's shared-memory region: created, filled, registered; `close` undoes all three."""

    def __init__(self, client, nbytes: int) -> None:
        with _counter_lock:
            n = next(_counter)
        self.name = f"{SHM_PREFIX}{os.getpid()}_{threading.get_ident() % 100000}_{n}"
        self.key = "/" + self.name
        self.size = max(int(nbytes), 1)
        self.client = client
        self.handle = _shm().create_shared_memory_region(self.name, self.key, self.size)
        self.registered = False
        self.offset = 0

    def register(self) -> None:
        self.client.register_system_shared_memory(self.name, self.key, self.size)
        self.registered = True

    def put(self, array: np.ndarray) -> int:
        offset = self.offset
        _shm().set_shared_memory_region(self.handle, [np.ascontiguousarray(array)], offset=offset)
        self.offset += array.nbytes
        return offset

    def take(self, nbytes: int) -> int:
        offset = self.offset
        self.offset += nbytes
        return offset

    def read(self, dtype, shape, offset: int) -> np.ndarray:
        return np.array(_shm().get_contents_as_numpy(self.handle, dtype, shape, offset=offset))  # copy out

    def _unregister(self, patience: float = 10.0) -> None:
        """Unregister from the server. Triton may still hold the region for a moment after it sent the
        response ("currently in use"): retry for up to `patience` seconds. A server that is gone
        took its registry with it."""
        import time

        deadline = time.monotonic() + patience
        delay = 0.005
        while True:
            try:
                self.client.unregister_system_shared_memory(self.name)
                return
            except Exception as exc:  # noqa: BLE001
                text = str(exc)
                if "in use" not in text or time.monotonic() >= deadline:
                    log = logger.warning if "in use" in text else logger.debug
                    log("unregistering shared-memory region %s: %s", self.name, text)
                    return
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def close(self) -> None:
        if self.registered:
            self._unregister()
        try:
            _shm().destroy_shared_memory_region(self.handle)
        except Exception as exc:  # noqa: BLE001 - e.g. a view still exported; unlink the name anyway
            logger.warning("could not release shared-memory region %s cleanly: %s", self.key, exc)
            (Path("/dev/shm") / self.name).unlink(missing_ok=True)


class Transport:
    """Inference calls to one server (`address` HOST:PORT, known to be live) over shm or gRPC."""

    def __init__(self, address: str, settings: TransportSettings | None = None) -> None:
        self.address = address
        self.settings = settings or TransportSettings.resolve()
        self._local = threading.local()
        self._params: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._clients: list = []
        self.mode = self._choose_mode()
        logger.info("transport to %s: %s", address, self.mode)

    # -- connections -------------------------------------------------------------------------
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

    def _choose_mode(self) -> str:
        if self.settings.mode == "grpc":
            return "grpc"
        local = is_local_address(self.address)
        if not local and self.settings.mode == "shm":
            raise UsageError(f"--transport shm needs a server on this host; {self.address} is not")
        if local:
            problem = self._probe_shm()
            if problem is None:
                self._unregister_stale()
                return "shm"
            if self.settings.mode == "shm":
                raise ServerUnavailableError(f"the server at {self.address} cannot use system shared memory: {problem}")
            logger.info("shared memory unavailable (%s); using gRPC", problem)
        return "grpc"

    def _probe_shm(self) -> str | None:
        try:
            region = _Region(self.client(), 64)
        except Exception as exc:  # noqa: BLE001 - e.g. no /dev/shm in this container
            return str(exc)
        try:
            region.register()
            return None
        except Exception as exc:  # noqa: BLE001 - server in another IPC namespace
            return getattr(exc, "message", lambda: str(exc))() or str(exc)
        finally:
            region.close()

    def _unregister_stale(self) -> None:
        """Unregister lesionseg regions the server still maps although their file is gone from
        /dev/shm (a client killed mid-request): nobody else will, and each pins server memory."""
        try:
            status = self.client().get_system_shared_memory_status()
        except Exception as exc:  # noqa: BLE001
            logger.debug("shared-memory status: %s", exc)
            return
        for name, region in status.regions.items():
            if name.startswith(SHM_PREFIX) and not (Path("/dev/shm") / region.key.lstrip("/")).exists():
                try:
                    self.client().unregister_system_shared_memory(name)
                    logger.info("unregistered stale shared-memory region %s", name)
                except Exception as exc:  # noqa: BLE001 - in use after all, or already gone
                    logger.debug("stale region %s: %s", name, exc)

    # -- model information -------------------------------------------------------------------
    def parameters(self, model: str) -> dict[str, str]:
        """The served `model`'s config parameters (cached for the transport's life)."""
        from lesionseg.client.session import model_parameters

        with self._lock:
            cached = self._params.get(model)
        if cached is None:
            cached = model_parameters(self.client(), model, self.address)
            with self._lock:
                self._params[model] = cached
        return cached

    def wait_ready(self, model: str, timeout: float) -> bool:
        """Poll until the server is live and `model` ready again (after a restart); False on timeout."""
        import time

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

    # -- inference ---------------------------------------------------------------------------
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
            if self.mode == "shm":
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
        region = _Region(client, sum(a.nbytes for a in arrays.values()) + sum(out_bytes.values()))
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


def leaked_regions(pids=None) -> list[str]:
    """lesionseg shared-memory regions in /dev/shm created by `pids`, or (default) by processes that
    have exited — those nobody will remove. A region of a running client is in use, not leaked."""
    root = Path("/dev/shm")
    found = []
    for path in sorted(root.glob(SHM_PREFIX + "*")) if root.is_dir() else []:
        owner = path.name[len(SHM_PREFIX):].split("_", 1)[0]
        pid = int(owner) if owner.isdigit() else -1
        if (pid in pids) if pids is not None else not Path(f"/proc/{pid}").exists():
            found.append(path.name)
    return found
