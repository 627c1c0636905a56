"""The Helm chart in deploy/helm/lesionseg, rendered offline with the Helm v4 SDK (helm-python-sdk,
`import helm_python`): no helm binary, no cluster.

    objects = render(["cpu-values.yaml"], {"models": {"install": ["sct-legacy"]}})
    deployment = find(objects, "Deployment", "-triton")
"""

from __future__ import annotations

import copy
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


def values(values_files: Iterable[str | Path] = (), set_values: Mapping | Sequence[str] | None = None) -> dict:
    """The user values of `-f FILE...` (a bare name is a file in ci/) then `--set` (a dict, or
    "a.b=c" expressions parsed by Helm's own strvals parser)."""
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
        helm_python.HelmValuesError: the values fail values.schema.json (the message names the key).
        helm_python.HelmRenderError: a template failed (e.g. a `fail` with its message).
    """
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        return chart.render(values(values_files, set_values), name=release, namespace=namespace, is_install=True)


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
    import helm_python as helm

    return helm.lint(CHART, values(values_files, set_values), strict=True, namespace=NAMESPACE)
