"""Render and run: the chart's own manifests start a real Triton and a real gateway here.

The chart is rendered with the CPU values and one model (`sct-legacy`, from a sources volume);
then, with the containers' paths mapped onto local folders by their rendered volumeMounts
(/models, /sources = ../shared, /tmp, the gateway's config and spool) and their container ports
onto free local ports:

- the Triton pod's init container command runs (`lesionseg models install ...`, the `lesionseg`
  of this environment),
- the embedded tritonserver starts with the Triton container's rendered args and env (plus only
  --backend-directory: the NGC image has its backends at the default place),
- the rendered startup probe passes within its rendered budget, then readiness and liveness,
  and every installed model is READY;
- the gateway container's command and args run with the rendered gateway.toml (-url pointed at
  this Triton), its tcpSocket probes pass and a C-ECHO from the configured caller succeeds;
- both stop cleanly on SIGTERM within their rendered grace periods.

A path in a command, an argument, the environment or the gateway's config that no volume covers
fails the test: the root filesystem is read-only in the pod."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import helm_chart as hc
import pytest
import tomllib
from helm_chart import container, find
from pacs_peers import free_port
from waiting import poll, wait_for

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.realdata]

RUN_VALUES = {"models": {"install": ["sct-legacy"], "from": "/sources/sct_models",
                         "sourcesPersistentVolumeClaim": "sct-sources"}}


def lesionseg_executable() -> str:
    """`lesionseg` as the container's PATH would find it, this environment's bin first."""
    found = shutil.which("lesionseg", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert found, "lesionseg is not installed in this environment (pip install -e .)"
    return found


class Pod:
    """One rendered container's view of its paths and ports, mapped onto this machine."""

    def __init__(self, owner: dict, c: dict, volumes: dict[str, Path]) -> None:
        self.name = f"{owner['metadata']['name']}/{c['name']}"
        declared = {v["name"] for v in owner["spec"]["template"]["spec"].get("volumes", [])}
        declared |= {t["metadata"]["name"] for t in owner["spec"].get("volumeClaimTemplates", [])}
        self.mounts: dict[str, Path] = {}
        for mount in c.get("volumeMounts", []):
            assert mount["name"] in declared, f"{self.name} mounts undeclared volume {mount['name']}"
            assert mount["name"] in volumes, f"test has no local folder for volume {mount['name']}"
            self.mounts[mount["mountPath"]] = volumes[mount["name"]]
        self.ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        self.local_ports = {number: free_port() for number in self.ports.values()}

    def path(self, text: str) -> str:
        """A container path as a local one; fails for a path no volume holds."""
        for mount in sorted(self.mounts, key=len, reverse=True):
            if text == mount or text.startswith(mount.rstrip("/") + "/"):
                return str(self.mounts[mount]) + text[len(mount):]
        raise AssertionError(f"{self.name} uses {text}, which is on no volume (the root filesystem is read-only)")

    def arg(self, text: str) -> str:
        """An argument with its path (`/x`, `--key=/x`) mapped."""
        if text.startswith("/"):
            return self.path(text)
        key, sep, value = text.partition("=")
        if sep and value.startswith("/"):
            return f"{key}={self.path(value)}"
        return text

    def env(self, c: dict) -> dict[str, str]:
        """os.environ (the image's environment) with the container's rendered env on top."""
        env = dict(os.environ)
        for item in c.get("env", []):
            assert "value" in item, f"{self.name}: env {item['name']} is not a plain value"
            env[item["name"]] = self.arg(item["value"])
        return env

    def port(self, reference: int | str) -> int:
        """The local port standing for a container port (by name or number)."""
        number = self.ports[reference] if isinstance(reference, str) else reference
        assert number in self.local_ports, f"{self.name}: port {reference} is not a container port"
        return self.local_ports[number]

    def probe(self, probe: dict) -> bool:
        """One try of a rendered httpGet or tcpSocket probe, as the kubelet makes it."""
        timeout = probe.get("timeoutSeconds", 1)
        if "httpGet" in probe:
            get = probe["httpGet"]
            assert get.get("scheme", "HTTP") == "HTTP"
            url = f"http://127.0.0.1:{self.port(get['port'])}{get['path']}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return 200 <= response.status < 400
            except (urllib.error.URLError, OSError):
                return False
        if "tcpSocket" in probe:
            try:
                with socket.create_connection(("127.0.0.1", self.port(probe["tcpSocket"]["port"])), timeout=timeout):
                    return True
            except OSError:
                return False
        raise AssertionError(f"{self.name}: probe kind not handled: {probe}")


def wait_startup(pod: Pod, c: dict, process: subprocess.Popen, log: Path) -> float:
    """Poll the startup probe (more often than its period) until it passes within its rendered
    budget, initialDelaySeconds + periodSeconds x failureThreshold; returns the seconds taken."""
    probe = c["startupProbe"]
    budget = probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]

    def passes() -> bool:
        if process.poll() is not None:
            pytest.fail(f"{pod.name} exited {process.returncode} before its startup probe passed:\n{log.read_text()[-4000:]}")
        return pod.probe(probe)

    start = time.monotonic()
    if not poll(passes, budget, interval=0.5):
        pytest.fail(f"{pod.name}: startup probe still failing after its budget of {budget} s")
    return time.monotonic() - start


def stop(process: subprocess.Popen, grace: float) -> int:
    """SIGTERM, as the kubelet stops a container; SIGKILL after the grace period."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
        pytest.fail(f"still running {grace} s after SIGTERM (terminationGracePeriodSeconds): SIGKILLed")


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return hc.render(["cpu-values.yaml"], RUN_VALUES)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, shared: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pod")
    names = {n: root / n for n in ("models", "tmp", "engine-cache", "spool", "config", "gateway-tmp", "work")}
    for path in names.values():
        path.mkdir()
    return {**names, "sources": shared, "dshm": Path("/dev/shm")}


def triton_volumes(folders: dict[str, Path]) -> dict[str, Path]:
    return {"models": folders["models"], "tmp": folders["tmp"], "sources": folders["sources"], "dshm": folders["dshm"]}


@pytest.fixture(scope="module")
def triton_installed(objects, folders):
    """The Triton pod's init containers run (the models installed into /models), and /models then
    mounted as rendered; yields their seconds by name."""
    deployment = find(objects, "Deployment", "-triton")
    spec = deployment["spec"]["template"]["spec"]
    timings = {}
    for init in spec["initContainers"]:
        pod = Pod(deployment, init, triton_volumes(folders))
        command = init["command"]
        assert command[0] == "lesionseg", command
        start = time.monotonic()
        done = subprocess.run([lesionseg_executable(), *map(pod.arg, command[1:])], env=pod.env(init),
                              cwd=folders["work"], capture_output=True, text=True, timeout=300, check=False)
        timings[init["name"]] = time.monotonic() - start
        assert done.returncode == 0, f"{init['name']} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-4000:]}"
    assert any((folders["models"] / name / "config.pbtxt").is_file() for name in ("deepseg_lesion_t2s", "deepseg_lesion_t2_ax"))
    (models_mount,) = [m for m in container(deployment, "triton")["volumeMounts"] if m["mountPath"] == "/models"]
    if models_mount.get("readOnly"):  # as mounted; root ignores the mode bits, so the tree is also compared
        set_writable(folders["models"], False)
    try:
        yield timings
    finally:
        set_writable(folders["models"], True)


@contextlib.contextmanager
def triton_container(objects, folders: dict[str, Path], work: Path):
    """The Triton container started on the installed models (its own local ports; its backends
    folder and log in `work`) until its startup probe passes; yields (Pod, container, process,
    startup seconds, log). A read-only /models must be unchanged when it is stopped."""
    from lesionseg.server.launch.binary import (
        find_distribution,
        make_backend_dir,
        server_environment,
    )

    deployment = find(objects, "Deployment", "-triton")
    server = container(deployment, "triton")
    pod = Pod(deployment, server, triton_volumes(folders))
    assert server["command"] == ["tritonserver"]
    (models_mount,) = [m for m in server["volumeMounts"] if m["mountPath"] == "/models"]
    read_only = bool(models_mount.get("readOnly"))
    before = tree(folders["models"])
    args = []
    for arg in server["args"]:
        match = re.fullmatch(r"--(grpc|http|metrics)-port=(\d+)", arg)
        args.append(f"--{match[1]}-port={pod.port(int(match[2]))}" if match else pod.arg(arg))
    assert {int(m[1]) for a in server["args"] if (m := re.fullmatch(r"--\w+-port=(\d+)", a))} == set(pod.ports.values())
    dist = find_distribution()
    backends = make_backend_dir(dist, work)
    log = work / "tritonserver.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(dist.binary), *args, f"--backend-directory={backends}"],
                                   env=server_environment(dist, pod.env(server)), cwd=work,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        startup = wait_startup(pod, server, process, log)
        yield pod, server, process, startup, log
        if read_only:
            changed = sorted(set(tree(folders["models"]).items()) ^ set(before.items()))
            assert not changed, f"Triton wrote into its read-only /models: {changed[:10]}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def triton_pod(objects, folders, triton_installed):
    """The module's Triton pod: init containers run, then the server; yields (Pod, container,
    process, seconds of the init containers and of the startup, log). No test stops it."""
    with triton_container(objects, folders, folders["work"]) as (pod, server, process, startup, log):
        yield pod, server, process, {**triton_installed, "startup": startup}, log


@pytest.fixture
def own_triton_pod(objects, folders, triton_installed, tmp_path):
    """A Triton pod of its own on the same installed models, for a test that stops it: the
    module's stays up for the others, whatever order they run in."""
    with triton_container(objects, folders, tmp_path) as started:
        yield started


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` (file sizes and mtimes), but Python's bytecode caches:
    the interpreter writes them where it can and skips them silently on a read-only mount."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (0, 0)
            for p in folder.rglob("*") if "__pycache__" not in p.parts}


def set_writable(folder: Path, writable: bool) -> None:
    """chmod u+w / a-w a whole tree (a read-only volume mount, as far as a non-root user sees it)."""
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode | 0o200 if writable else mode & ~0o222)


def test_triton_passes_its_rendered_probes(triton_pod, folders) -> None:
    pod, server, _, timings, _ = triton_pod
    assert pod.probe(server["readinessProbe"]), "readiness failed after the startup probe passed"
    assert pod.probe(server["livenessProbe"])
    request = urllib.request.Request(f"http://127.0.0.1:{pod.port('http')}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        index = json.loads(response.read())
    installed = {p.name for p in folders["models"].iterdir() if (p / "config.pbtxt").is_file()}
    assert {"deepseg_lesion_t2s", "deepseg_lesion_t2s_net", "deepseg_ctr_t2s_net"} <= installed
    states = {m["name"]: m.get("state") for m in index}
    assert states == {name: "READY" for name in installed}, states
    with urllib.request.urlopen(f"http://127.0.0.1:{pod.port('metrics')}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'nv_inference_request_success{model="deepseg_lesion_t2s"' in metrics
    assert 'nv_inference_queue_duration_us{model="deepseg_lesion_t2s"' in metrics, "the adapter rule's series"
    print(f"\ninit and startup seconds: { {k: round(v, 1) for k, v in timings.items()} }")


def test_gateway_container_runs_with_its_rendered_config(objects, folders, triton_pod) -> None:
    triton = triton_pod[0]
    statefulset = find(objects, "StatefulSet", "-gateway")
    c = container(statefulset, "gateway")
    pod = Pod(statefulset, c, {"config": folders["config"], "spool": folders["spool"], "tmp": folders["gateway-tmp"]})
    text = find(objects, "ConfigMap", "-gateway")["data"]["gateway.toml"]

    def port_line(match: re.Match) -> str:
        assert int(match[2]) in pod.local_ports, f"gateway.toml {match[1]} = {match[2]} is not a container port"
        return f"{match[1]} = {pod.port(int(match[2]))}"

    text = re.sub(r"^(port|metrics_port) = (\d+)$", port_line, text, flags=re.MULTILINE)
    text = re.sub(r'^(\w+) = "(/[^"]*)"$', lambda m: f"{m[1]} = {json.dumps(pod.path(m[2]))}", text, flags=re.MULTILINE)
    config_volume = next(v for v in statefulset["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"].endswith("-gateway")
    (folders["config"] / "gateway.toml").write_text(text)  # the ConfigMap volume: one file per key

    args = list(c["args"])
    url = args.index("-url") + 1
    assert args[url] == f"{hc.FULLNAME}-grpc:8001"
    args[url] = f"127.0.0.1:{triton.port('grpc')}"  # the headless Service's name, resolved
    assert c["command"] == ["lesionseg", "gateway"]
    log = folders["work"] / "gateway.log"
    with open(log, "w") as out:
        process = subprocess.Popen([lesionseg_executable(), *c["command"][1:], *map(pod.arg, args)],
                                   env={**pod.env(c), "PYTHONUNBUFFERED": "1"}, cwd=folders["work"],
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_startup(pod, c, process, log)
        assert pod.probe(c["readinessProbe"]) and pod.probe(c["livenessProbe"])
        config = tomllib.loads(text)
        caller = next(iter(config["callers"]))
        port = str(pod.port("dicom"))
        echo = subprocess.run(["echoscu", "-aet", caller, "-aec", config["gateway"]["ae_title"], "127.0.0.1", port],
                              capture_output=True, text=True, timeout=60, check=False)
        assert echo.returncode == 0, f"C-ECHO failed: {echo.stdout}{echo.stderr}\n{log.read_text()[-3000:]}"
        refused = subprocess.run(["echoscu", "-aet", "NOTACALLER", "-aec", config["gateway"]["ae_title"], "127.0.0.1", port],
                                 capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode != 0, "a calling AE title outside [callers] was accepted: the rendered config is not in use"
        with urllib.request.urlopen(f"http://127.0.0.1:{pod.port('metrics')}/metrics", timeout=10) as response:
            assert response.status == 200
        assert (folders["spool"] / "journal.sqlite").exists(), "the spool is not where the volume is"
        wait_for(lambda: f"127.0.0.1:{triton.port('grpc')}" in log.read_text(), 10, "the gateway to name its Triton")
        code = stop(process, statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
        assert code == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_triton_stops_within_its_grace_period(objects, own_triton_pod) -> None:
    _, _, process, _, log = own_triton_pod
    grace = find(objects, "Deployment", "-triton")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    start = time.monotonic()
    code = stop(process, grace)
    assert code == 0, log.read_text()[-3000:]
    print(f"\nTriton stopped {time.monotonic() - start:.1f} s after SIGTERM (grace {grace} s)")
