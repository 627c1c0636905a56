"""The layout's rules. The layers themselves are import-linter's contracts in pyproject.toml
([tool.importlinter], run by `lint-imports` in .ci/run and here); what it does not check is here:
lazy imports naming modules that exist (a stale name only fails when its line runs), and every
package being in the distribution.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).parent.parent
PACKAGES = {"core": "lesionseg.core", "client": "lesionseg.client", "gateway": "lesionseg.gateway",
            "server": "lesionseg.server", "export": "lesionseg.export"}


def modules() -> dict[str, Path]:
    """Every module of the five packages: dotted name -> file."""
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


def test_imports_name_existing_modules() -> None:
    """Also catches stale module names in lazy imports, which only fail when that line runs."""
    unknown = {name: sorted(t for t in imports(name) if t not in MODULES) for name in MODULES}
    assert not {k: v for k, v in unknown.items() if v}


def test_every_package_is_in_the_distribution() -> None:
    """`pip install .` (not editable) ships only the packages pyproject.toml lists."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert found == listed
    assert {package: folder for folder, package in PACKAGES.items()} == config["package-dir"]


def test_import_contracts_hold() -> None:
    """`lint-imports` with the contracts of pyproject.toml (upward imports, the client and gateway
    reaching into the server, import cycles)."""
    executable = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert executable, "import-linter is missing: pip install -e '.[test]'"
    done = subprocess.run([executable, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]

