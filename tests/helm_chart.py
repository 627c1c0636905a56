"""The Helm chart in deploy/helm/lesionseg, rendered offline with the Helm v4 SDK (helm-python-sdk,
`import helm_python`): no helm binary, no cluster.

    objects = render(["cpu-values.yaml"], {"models": {"install": ["sct-legacy"]}})
    deployment = find(objects, "Deployment", "-triton")

The SDK is a Go library (`libhelm_c.so`) loaded with ctypes, and loading it starts the Go runtime
in the loading process: its threads and its own signal handlers. The test process also runs
gRPC, ONNX Runtime and OpenVINO threads and forks servers for twenty minutes, and there the Go
runtime has killed it with SIGSEGV, silently (pytest's capture had its stderr), at the same test
of a given random order. So the SDK runs in a helper process of its own (`python helm_chart.py
--worker`, started on first use, one per test session): every call below is a JSON line to it,
and a failure of the SDK comes back as `HelmError` (or `HelmValuesError`, `HelmRenderError`)
with the SDK's message.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HELM_DIR = ROOT / "deploy" / "helm"
CHART = HELM_DIR / "lesionseg"
CI_VALUES = CHART / "ci"
ADAPTER_RULES = CHART / "prometheus-adapter" / "rules.yaml"
YAMLLINT_CONFIG = HELM_DIR / ".yamllint"
RELEASE = "ls"
NAMESPACE = "lesionseg"
FULLNAME = "ls-lesionseg"


def ci_values_files() -> list[Path]:
    """The CI matrix: every deploy/helm/lesionseg/ci/*-values.yaml."""
    return sorted(CI_VALUES.glob("*-values.yaml"))


def merge(base: dict, override: Mapping) -> dict:
    """Helm's coalescing of values files: maps merge key by key, anything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class HelmError(Exception):
    """The Helm SDK failed (in the worker); the message is the SDK's, `kind` its exception's name."""

    def __init__(self, message: str, kind: str = "HelmError") -> None:
        super().__init__(message)
        self.kind = kind


class HelmValuesError(HelmError, ValueError):
    """The values fail the chart's values.schema.json (the message names the key)."""


class HelmRenderError(HelmError):
    """A template failed (e.g. a `fail` with its message)."""


_ERRORS = {"HelmValuesError": HelmValuesError, "HelmRenderError": HelmRenderError}


class _Worker:
    """The helper process that holds the Go library: one JSON request per line on its stdin, one
    JSON answer per line on a pipe of its own (its stdout goes to stderr, so nothing the library
    prints can break the protocol)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: subprocess.Popen | None = None
        self.answers = None

    def call(self, op: str, *args):
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                read, write = os.pipe()
                self.process = subprocess.Popen([sys.executable, __file__, "--worker", str(write)], stdin=subprocess.PIPE,
                                                text=True, pass_fds=(write,))
                os.close(write)
                self.answers = os.fdopen(read, "r")
            assert self.process.stdin is not None and self.answers is not None
            self.process.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
            self.process.stdin.flush()
            line = self.answers.readline()
        if not line:
            raise RuntimeError(f"the Helm worker died (exit code {self.process.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            kind, message = answer["error"], answer["message"]
            if answer.get("helm"):
                raise _ERRORS.get(kind, HelmError)(message, kind)
            raise RuntimeError(f"Helm worker: {kind}: {message}")
        return answer["result"]

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


_worker = _Worker()
atexit.register(_worker.close)


def _paths(values_files: Iterable[str | Path]) -> list[str]:
    return [str(f) for f in values_files]


def values(values_files: Iterable[str | Path] = (), set_values: Mapping | Sequence[str] | None = None) -> dict:
    """The user values of `-f FILE...` (a bare name is a file in ci/) then `--set` (a dict, or
    "a.b=c" expressions parsed by Helm's own strvals parser)."""
    return _worker.call("values", _paths(values_files), set_values)


def _values(values_files: Sequence[str], set_values: Mapping | Sequence[str] | None) -> dict:
    import helm_python as helm

    merged: dict = {}
    for file in values_files:
        path = Path(file)
        if not path.is_absolute() and not path.exists():
            path = CI_VALUES / path
        merged = merge(merged, helm.values_from_yaml(path.read_text()) or {})
    if set_values is not None:
        if isinstance(set_values, Mapping):
            merged = merge(merged, set_values)
        else:
            for expression in set_values:
                merged = merge(merged, helm.parse_set_string(expression))
    return merged


def render_manifests(values_files: Iterable[str | Path] = (), set_values: Mapping | Sequence[str] | None = None, *,
                     release: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), as `helm template` renders them.

    Raises:
        HelmValuesError: the values fail values.schema.json (the message names the key).
        HelmRenderError: a template failed (e.g. a `fail` with its message).
    """
    return _worker.call("render", _paths(values_files), set_values, release, namespace)


def _render(values_files: Sequence[str], set_values, release: str, namespace: str) -> dict[str, str]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        return chart.render(_values(values_files, set_values), name=release, namespace=namespace, is_install=True)


def chart_defaults() -> dict:
    """The chart's own values.yaml, as the SDK loads it."""
    return _worker.call("defaults")


def chart_schema() -> dict:
    """The chart's values.schema.json, after the SDK validated the default values against it
    (a failure raises HelmValuesError)."""
    return _worker.call("schema")


def _defaults() -> dict:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        return chart.values


def _schema() -> dict:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        chart.validate_schema({})
        return chart.schema


def render(values_files: Iterable[str | Path] = (), set_values: Mapping | Sequence[str] | None = None, *,
           release: str = RELEASE, namespace: str = NAMESPACE) -> list[dict]:
    """The rendered Kubernetes objects, in template order."""
    objects = []
    for name, text in sorted(render_manifests(values_files, set_values, release=release, namespace=namespace).items()):
        if not name.endswith((".yaml", ".yml")):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def render_text(values_files: Iterable[str | Path] = (), set_values: Mapping | Sequence[str] | None = None) -> str:
    """Every rendered object as one multi-document YAML stream (what `helm template` prints)."""
    docs = []
    for name, text in sorted(render_manifests(values_files, set_values).items()):
        if name.endswith((".yaml", ".yml")) and text.strip():
            docs.append(f"---\n# Source: {name}\n{text.strip()}\n")
    return "".join(docs)


def find(objects: list[dict], kind: str, name_suffix: str = "") -> dict:
    """The one object of `kind` whose name ends with `name_suffix`; fails when none or several."""
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    if len(hits) != 1:
        names = [f"{o['kind']}/{o['metadata']['name']}" for o in objects]
        raise AssertionError(f"expected one {kind} named *{name_suffix}, found {len(hits)} among {names}")
    return hits[0]


def find_all(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def container(pod_owner: dict, name: str, *, init: bool = False) -> dict:
    """A (init) container of a Deployment / StatefulSet / Job by name."""
    spec = pod_owner["spec"]["template"]["spec"]
    for c in spec.get("initContainers" if init else "containers", []):
        if c["name"] == name:
            return c
    raise AssertionError(f"{pod_owner['kind']}/{pod_owner['metadata']['name']} has no container {name}")


CHECKOV_INSTALL = "python3 -m venv .venv-checkov && .venv-checkov/bin/pip install checkov"


def checkov_executable() -> str | None:
    """checkov: $LESIONSEG_CHECKOV, else <repo>/.venv-checkov/bin/checkov (its own venv: checkov
    pins versions that would downgrade this environment's packages), else `checkov` on PATH."""
    import os
    import shutil

    configured = os.environ.get("LESIONSEG_CHECKOV")
    if configured:
        return configured if Path(configured).is_file() else None
    local = ROOT / ".venv-checkov" / "bin" / "checkov"
    if local.is_file():
        return str(local)
    return shutil.which("checkov")


def lint(values_files: Iterable[str | Path] = (), set_values: Mapping | Sequence[str] | None = None) -> dict:
    """`helm lint --strict` of the chart with these values: {"messages": [...], "errors": [...]}."""
    return _worker.call("lint", _paths(values_files), set_values)


def _lint(values_files: Sequence[str], set_values) -> dict:
    import helm_python as helm

    return helm.lint(CHART, _values(values_files, set_values), strict=True, namespace=NAMESPACE)


def _serve(answer_fd: int) -> None:
    """The worker: answer each request line on stdin until it closes."""
    answers = os.fdopen(answer_fd, "w")
    os.dup2(2, 1)  # whatever the library prints goes to stderr, never into the answers
    ops = {"values": _values, "render": _render, "lint": _lint, "defaults": _defaults, "schema": _schema}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = {"result": ops[request["op"]](*request["args"])}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            import helm_python as helm

            answer = {"error": type(exc).__name__, "message": str(exc), "helm": isinstance(exc, helm.HelmError)}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _serve(int(sys.argv[2]))
