"""Real DICOM peers for the gateway tests: Orthanc (the hospital PACS, with its DICOMweb plugin)
started on loopback from a generated config, dcmtk's storescu / storescp, the gateway itself as a
subprocess (so it can be SIGKILLed), and a TCP forwarder that stands for a Triton server going
away and coming back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from waiting import wait_for

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """An Orthanc server in `folder`: AE ORTHANC on `dicom_port`, REST + DICOMweb on `http_port`,
    knowing the modalities `modalities` (name -> (AET, host, port))."""

    def __init__(self, folder: Path, modalities: dict[str, tuple[str, str, int]]) -> None:
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "lesionseg-test-pacs", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "DicomServerEnabled": True, "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False,
            "DicomModalities": {name: list(peer) for name, peer in modalities.items()},
            "StableAge": 1, "OverwriteInstances": True, "StorageCompression": False, "ConcurrentJobs": 2,
            "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
        self.log = open(folder / "orthanc.log", "w")
        self.process = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._up, 60, "Orthanc to answer")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def request(self, method: str, path: str, body: bytes | dict | None = None, content_type: str = "application/json"):
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=120) as response:
            raw = response.read()
        return json.loads(raw) if raw[:1] in (b"{", b"[") else raw

    def get(self, path: str):
        return self.request("GET", path)

    def upload(self, folder: Path) -> str:
        """POST every file of `folder` to /instances; returns the Orthanc id of their series."""
        series = None
        for file in sorted(folder.glob("*.dcm")):
            series = self.request("POST", "/instances", file.read_bytes(), "application/dicom")["ParentSeries"]
        return series

    def series_with_modality(self, modality: str) -> list[dict]:
        return [s for s in self.get("/series?expand") if s["MainDicomTags"].get("Modality") == modality]

    def instance_file(self, instance_id: str) -> bytes:
        return self.request("GET", f"/instances/{instance_id}/file")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def storescu(folder: Path, port: int, *, calling: str = "STORESCU", called: str = "LESIONSEG",
             timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["storescu", "-v", "+sd", "+r", "-aet", calling, "-aec", called, "127.0.0.1", str(port), str(folder)],
                          capture_output=True, text=True, timeout=timeout)


class StoreSCP:
    """dcmtk's storescp as a second PACS: every received object is a new file (-uf), so the test
    can count how often each was sent."""

    def __init__(self, folder: Path, port: int | None = None, env: dict | None = None) -> None:
        self.folder, self.port, self.env = folder, port or free_port(), env
        folder.mkdir(parents=True, exist_ok=True)
        self.process = None

    def start(self) -> "StoreSCP":
        self.process = subprocess.Popen(["storescp", "-aet", "ARCHIVE", "-uf", "-od", str(self.folder), str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        wait_for(lambda: subprocess.run(["echoscu", "-aec", "ARCHIVE", "127.0.0.1", str(self.port)],
                                        capture_output=True).returncode == 0, 20, "storescp to answer C-ECHO")
        return self

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)


class GatewayProcess:
    """`lesionseg gateway --config FILE` in a subprocess, its stderr in `log`."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log_path = config, log
        self.process = None

    def start(self, ready_port: int) -> "GatewayProcess":
        self.log = open(self.log_path, "a")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "lesionseg.client.cli", "-v", "gateway", "--config", str(self.config)],
                                        stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_for(lambda: self._echo(ready_port), 60, "the gateway to answer C-ECHO")
        return self

    def _echo(self, port: int) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"gateway exited {self.process.returncode}: {self.log_path.read_text()[-3000:]}")
        return subprocess.run(["echoscu", "-aet", "STORESCU", "-aec", "LESIONSEG", "127.0.0.1", str(port)],
                              capture_output=True).returncode == 0

    def text(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=20)
        self.log.close()

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=90)
        self.log.close()
        return code


class Forwarder:
    """A TCP forwarder from a local port to `target` (host, port): a Triton server that is down
    until `start()` and goes away at `stop()`, without touching the real one."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self._server: socket.socket | None = None

    def start(self) -> "Forwarder":
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while chunk := a.recv(65536):
                b.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
