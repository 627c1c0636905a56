"""The thin `model.py` of a Python-backend model: one import of a class from lesionseg's package."""

from __future__ import annotations

import importlib
from pathlib import Path

TEMPLATE = '''"""Triton Python-backend entry point of `{name}`; the code lives in `{module}`."""

from {module} import {cls} as TritonPythonModel  # noqa: F401
'''


def model_source(name: str, target: str) -> str:
    """Text of `model.py` for model `name`; `target` is "package.module:ClassName"."""
    module, _, cls = target.partition(":")
    if not module or not cls:
        raise ValueError(f"{target!r} is not 'package.module:ClassName'")
    return TEMPLATE.format(name=name, module=module, cls=cls)


def write_model_py(repository: Path, name: str, target: str, *, version: int = 1, check_import: bool = True) -> Path:
    """Write `<repository>/<name>/<version>/model.py` delegating to `target`.

    With `check_import`, the class must be importable here (catches typos before Triton does).
    """
    if check_import:
        module, _, cls = target.partition(":")
        getattr(importlib.import_module(module), cls)
    path = repository / name / str(version) / "model.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model_source(name, target))
    return path
