"""Locate the `tritonserver` binary bundled in the nvidia-pytriton wheel and prepare what it needs.

The wheel ships `pytriton/tritonserver/bin/tritonserver` (Triton 2.51), its shared libraries in
`site-packages/nvidia_pytriton.libs`, the Python backend in `pytriton/tritonserver/backends/python`
and one `triton_python_backend_stub` per Python version. Triton expects the stub next to
`libtriton_python.so`, so we assemble a backend directory of symlinks in a work folder.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

from lesionseg.core.errors import ServerStartError


@dataclasses.dataclass(frozen=True, kw_only=True)
class TritonDistribution:
    """Paths of the bundled Triton server."""

    binary: Path
    libs: Path
    python_backend: Path
    stub: Path


def find_distribution() -> TritonDistribution:
    """Find the Triton server bundled with nvidia-pytriton in this Python environment.

    Raises:
        ServerStartError: the wheel is missing or lacks a stub for the running Python.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("the bundled Triton server is missing: pip install nvidia-pytriton==0.7.0")
    root = Path(next(iter(spec.submodule_search_locations)))
    triton = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    dist = TritonDistribution(
        binary=triton / "bin" / "tritonserver",
        libs=root.parent / "nvidia_pytriton.libs",
        python_backend=triton / "backends" / "python",
        stub=triton / "python_backend_stubs" / version / "triton_python_backend_stub",
    )
    for path in (dist.binary, dist.libs, dist.python_backend / "libtriton_python.so"):
        if not path.exists():
            raise ServerStartError(f"the bundled Triton server is incomplete: {path} is missing")
    if not dist.stub.exists():
        raise ServerStartError(f"the bundled Triton has no Python-backend stub for Python {version} ({dist.stub})")
    return dist


def make_backend_dir(dist: TritonDistribution, workdir: Path) -> Path:
    """Build `<workdir>/backends/python/` holding the backend library, its utils and the stub.

    Returns:
        The directory to pass as `--backend-directory`.
    """
    backends = workdir / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for src in sorted(dist.python_backend.iterdir()):
        if src.is_file():
            (python_dir / src.name).symlink_to(src)
    (python_dir / dist.stub.name).symlink_to(dist.stub)
    return backends


def server_environment(dist: TritonDistribution, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the server and its Python-backend stubs need.

    The stub embeds the running Python: with this environment's `bin` first on PATH it finds the
    same site-packages (numpy < 2, lesionseg itself) as the process that launched it.
    """
    env = dict(os.environ if base is None else base)
    libs = str(dist.libs)
    env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env
