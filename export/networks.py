"""Write an exported ONNX network into a Triton repository: `<name>/1/model.onnx`, its entry
(`lesionseg.server.repository.networks`) and `<name>/export.json` (where it came from, its
parity record and checksum)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lesionseg.core.files import atomic_write_bytes, atomic_write_text, sha256
from lesionseg.server.repository.networks import WEIGHTS, NetworkEntry, write_network_entry

RECORD_NAME = "export.json"


def target_options(target: str) -> dict[str, str]:
    """The serving backend and instance kind of the networks of an export `target` (cpu or gpu)."""
    return {"backend": "python", "instance_kind": "KIND_CPU"} if target == "cpu" else \
        {"backend": "onnxruntime", "instance_kind": "KIND_GPU"}


def write_network(entry: NetworkEntry, model: Any, repository: Path, *, backend: str, record: dict[str, Any],
                  instance_kind: str = "KIND_CPU") -> Path:
    """Write `model` (an onnx.ModelProto) and its entry; `record` (source, parity) goes to export.json.

    Returns:
        The path of `model.onnx`.
    """
    folder = repository / entry.name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    target = atomic_write_bytes(version / WEIGHTS, model.SerializeToString())
    write_network_entry(entry, repository, backend=backend, instance_kind=instance_kind)
    full_record = {**record, "onnx_sha256": sha256(target), "backend": backend}
    atomic_write_text(folder / RECORD_NAME, json.dumps(full_record, indent=2, sort_keys=True) + "\n")
    return target
