"""The layout's rules, checked on the source: which layer may import which, and no import loops.

Layers (README, Architecture), lowest first; each may import itself and the layers it lists:

    lesionseg.core               nothing else of lesionseg
    lesionseg.server.pipelines   core
    lesionseg.server.backend     core, pipelines
    lesionseg.server.repository  core, pipelines, backend
    lesionseg.server.launch      core
    lesionseg.export             core, pipelines, backend (the runtimes a parity report measures), repository,
                                 and the client's NIfTI reading and orientation (what a report's images go through)
    lesionseg.client             core, launch (never export, repository, backend or pipelines)
    lesionseg.client.cli         anything: the command line sits on top

Every import counts, also those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGES = {"core": "lesionseg.core", "client": "lesionseg.client", "server": "lesionseg.server", "export": "lesionseg.export"}

LAYERS = {
    "lesionseg.core": {"lesionseg.core"},
    "lesionseg.server": set(),  # the package's docstring only
    "lesionseg.server.pipelines": {"lesionseg.core", "lesionseg.server.pipelines"},
    "lesionseg.server.backend": {"lesionseg.core", "lesionseg.server.pipelines", "lesionseg.server.backend"},
    "lesionseg.server.repository": {"lesionseg.core", "lesionseg.server.pipelines", "lesionseg.server.backend",
                                    "lesionseg.server.repository"},
    "lesionseg.server.launch": {"lesionseg.core", "lesionseg.server.launch"},
    "lesionseg.export": {"lesionseg.core", "lesionseg.server.pipelines", "lesionseg.server.backend", "lesionseg.server.repository",
                         "lesionseg.export", "lesionseg.client.nifti", "lesionseg.client.orientation"},
    "lesionseg.client": {"lesionseg.core", "lesionseg.server.launch", "lesionseg.client"},
    "lesionseg.client.cli": {"lesionseg"},
}


def modules() -> dict[str, Path]:
    """Every module of the four packages: dotted name -> file."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = modules()


def imports(name: str) -> set[str]:
    """The lesionseg modules `name` imports anywhere in its file (`from X import Y` counts as X.Y
    when that is a module, else X)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t.startswith("lesionseg.") and t != name)
    return found


def layer(name: str) -> str:
    """The most specific layer `name` belongs to."""
    return max((key for key in LAYERS if name == key or name.startswith(key + ".")), key=len)


def test_every_module_belongs_to_a_layer() -> None:
    assert MODULES and all(layer(name) for name in MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_stay_within_the_layers_below(name: str) -> None:
    allowed = LAYERS[layer(name)]
    wrong = sorted(t for t in imports(name) if not any(t == a or t.startswith(a + ".") for a in allowed))
    assert not wrong, f"{name} ({layer(name)}) imports {wrong}"


def test_imports_name_existing_modules() -> None:
    """Also catches stale module names in lazy imports, which only fail when that line runs."""
    unknown = {name: sorted(t for t in imports(name) if t not in MODULES) for name in MODULES}
    assert not {k: v for k, v in unknown.items() if v}


def test_no_import_loops() -> None:
    graph = {name: {t for t in imports(name) if t in MODULES} for name in MODULES}
    # a package imports its own submodules only through __init__ re-exports; a cycle through an
    # __init__ that merely re-exports is still a loop, so nothing is exempt
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    assert not loops, f"import loops: {loops}"


def test_the_import_analysis_sees_lazy_and_upward_imports(tmp_path: Path) -> None:
    """The checks above can fail: a function-level import of the client from a pipeline is found."""
    fake = tmp_path / "bad.py"
    fake.write_text("def f():\n    from lesionseg.client.nifti import load_volume\n    return load_volume\n")
    MODULES["lesionseg.server.pipelines.bad"] = fake
    try:
        assert imports("lesionseg.server.pipelines.bad") == {"lesionseg.client.nifti"}
        with pytest.raises(AssertionError, match="imports"):
            test_imports_stay_within_the_layers_below("lesionseg.server.pipelines.bad")
    finally:
        del MODULES["lesionseg.server.pipelines.bad"]


def test_every_package_is_in_the_distribution() -> None:
    """`pip install .` (not editable) ships only the packages pyproject.toml lists."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert found == listed
    assert {package: folder for folder, package in PACKAGES.items()} == config["package-dir"]
