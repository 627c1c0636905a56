"""Running the lesionseg command of another checkout beside the installed one, so that a benchmark
measures two versions of the code in one run (`--code NAME=DIR` of startup.py and cohort.py)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGES = ("core", "client", "gateway", "server", "export")


def parse(items: list[str]) -> dict[str, Path]:
    """`["before=/tmp/x", ...]` -> {"before": Path("/tmp/x")}."""
    found = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not (Path(folder) / "client").is_dir():
            raise SystemExit(f"--code {item!r}: expected NAME=DIR, DIR a lesionseg checkout")
        found[name] = Path(folder)
    return found


def environment(folder: Path | None, work: Path) -> dict[str, str]:
    """The environment that makes a child process import lesionseg from `folder`'s checkout (None:
    the installed code): a `lesionseg/` folder of links to its packages, first on PYTHONPATH (before
    the installed editable finder, which Python consults after the path)."""
    env = dict(os.environ)
    if folder is None:
        return env
    package = work / "lesionseg"
    package.mkdir(parents=True)
    for name in PACKAGES:
        if (folder / name).is_dir():
            (package / name).symlink_to(folder.resolve() / name)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(work), env.get("PYTHONPATH", "")]))
    return env
