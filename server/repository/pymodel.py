"""The thin `model.py` of a Python-backend model: one import of a class from lesionseg's package.

The class is given as the class itself (never as a "module:Class" string), so a rename is caught
where the repository is written, not when Triton loads the model.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from lesionseg.server.backend.base import PythonModel

TEMPLATE = '''"""Triton Python-backend entry point of `{name}`; the code lives in `{module}`."""

from {module} import {cls} as TritonPythonModel  # noqa: F401
'''


def model_source(name: str, model_class: type) -> str:
    """Text of `model.py` for model `name`, importing `model_class` (a `PythonModel` subclass
    defined at the top level of an importable module).

    Raises:
        ValueError: `model_class` is not such a class.
    """
    if not isinstance(model_class, type) or not issubclass(model_class, PythonModel):
        raise ValueError(f"{model_class!r} is not a Python-backend model class (a PythonModel subclass)")
    module, cls = model_class.__module__, model_class.__qualname__
    if "." in cls or getattr(importlib.import_module(module), cls, None) is not model_class:
        raise ValueError(f"{module}.{cls} cannot be imported by name (define it at the top level of its module)")
    return TEMPLATE.format(name=name, module=module, cls=cls)


def write_model_py(repository: Path, name: str, model_class: type, *, version: int = 1) -> Path:
    """Write `<repository>/<name>/<version>/model.py` delegating to `model_class`."""
    text = model_source(name, model_class)
    path = repository / name / str(version) / "model.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
