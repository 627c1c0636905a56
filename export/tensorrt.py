"""`lesionseg export tensorrt`: TensorRT engines for a repository's GPU networks, built by
`trtexec` on the machine that will serve them.

Engines are tied to the GPU model and the TensorRT version, so they are built where they run: at
pod start (the Helm chart's initContainer) or in a Job on the same node pool. For every network
with a `configs/gpu.pbtxt` (an export with `--target gpu`) and its `1/model.onnx`, trtexec builds
`1/model.plan` over the same batch profile as the ONNX Runtime TensorRT accelerator, and
`configs/tensorrt.pbtxt` (`platform: tensorrt_plan`) is written beside it; a server started with
`--model-config-name=tensorrt` serves them. An engine is written under a temporary name and
renamed when trtexec succeeds, and its config only after that: a failed build leaves neither.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Sequence

from tritonclient.grpc import model_config_pb2 as mc

from lesionseg.core.errors import ExportError, InputError, UsageError
from lesionseg.core.files import atomic_write_text, sha256
from lesionseg.export.networks import RECORD_NAME
from lesionseg.server.repository.gpu import (
    GPU_VARIANT,
    PLAN,
    PRECISIONS,
    TENSORRT_VARIANT,
    tensorrt_accelerator,
    tensorrt_plan_config,
)
from lesionseg.server.repository.modelconfig import config_path, read_config, write_config
from lesionseg.server.repository.networks import WEIGHTS

logger = logging.getLogger(__name__)

#: Where NGC images keep trtexec when it is not on PATH.
TRTEXEC_PLACES = ("/usr/src/tensorrt/bin/trtexec",)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Engine:
    """One built engine: the network, its plan file and what built it."""

    network: str
    plan: Path
    precision: str
    seconds: float
    tensorrt_version: str | None


def find_trtexec(explicit: str | None = None) -> Path:
    """`explicit`, else env LESIONSEG_TRTEXEC, else `trtexec` on PATH, else NGC's place.

    Raises:
        ExportError: none exists (one line saying where it was looked for).
    """
    for candidate in (explicit, os.environ.get("LESIONSEG_TRTEXEC")):
        if candidate:
            if not Path(candidate).is_file() or not os.access(candidate, os.X_OK):
                raise ExportError(f"{candidate}: trtexec is not an executable file")
            return Path(candidate)
    found = shutil.which("trtexec")
    if found:
        return Path(found)
    for place in TRTEXEC_PLACES:
        if os.access(place, os.X_OK):
            return Path(place)
    raise ExportError("trtexec not found (not on PATH, not at " + ", ".join(TRTEXEC_PLACES) + "): it comes with "
                      "TensorRT on a GPU machine; without it, configs/gpu.pbtxt lets ONNX Runtime build the engines")


def gpu_networks(repository: Path) -> list[str]:
    """The models of `repository` that have a GPU variant and ONNX weights, sorted."""
    if not repository.is_dir():
        raise InputError(f"{repository}: repository does not exist")
    return sorted(folder.name for folder in repository.iterdir()
                  if config_path(repository, folder.name, GPU_VARIANT).is_file() and (folder / "1" / WEIGHTS).is_file())


def trtexec_command(trtexec: Path, onnx: Path, plan: Path, config: mc.ModelConfig, *, precision: str) -> list[str]:
    """The trtexec command building `plan` from `onnx` for a network's GPU `config`: its
    accelerator's profile shapes (batch 1 to max) and workspace, FP16 when asked, no timing run."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    params = tensorrt_accelerator(config) or {}
    shapes = {key: params.get(f"trt_profile_{key}_shapes") for key in ("min", "opt", "max")}
    if not all(shapes.values()):
        raise InputError(f"{config.name}: configs/{GPU_VARIANT}.pbtxt has no TensorRT profile shapes (export it again with --target gpu)")
    command = [str(trtexec), f"--onnx={onnx}", f"--saveEngine={plan}",
               f"--minShapes={shapes['min']}", f"--optShapes={shapes['opt']}", f"--maxShapes={shapes['max']}"]
    if "max_workspace_size_bytes" in params:
        command.append(f"--memPoolSize=workspace:{int(params['max_workspace_size_bytes']) >> 20}")
    if precision == "fp16":
        command.append("--fp16")
    command.append("--skipInference")
    return command


def _precision_of(config: mc.ModelConfig) -> str:
    mode = (tensorrt_accelerator(config) or {}).get("precision_mode", "FP32")
    return {v: k for k, v in PRECISIONS.items()}.get(mode, "fp32")


def _tensorrt_version(output: str) -> str | None:
    match = re.search(r"TensorRT version:\s*([\d.]+)", output)
    return match.group(1) if match else None


def build_engine(repository: Path, network: str, trtexec: Path, *, precision: str | None = None,
                 timeout: float | None = None) -> Engine:
    """Build one network's engine and write its `configs/tensorrt.pbtxt` (see the module doc)."""
    folder = repository / network
    gpu_config = read_config(config_path(repository, network, GPU_VARIANT))
    proven = _precision_of(gpu_config)
    precision = precision or proven
    if precision != "fp32" and precision != proven:
        raise UsageError(f"{network}: its configs/gpu.pbtxt is {proven}; a {precision} engine needs the network exported with "
                         f"--target gpu --precision {precision} and its parity report")
    plan = folder / "1" / PLAN
    partial = plan.with_name(plan.name + ".part")
    command = trtexec_command(trtexec, folder / "1" / WEIGHTS, partial, gpu_config, precision=precision)
    logger.info("building the TensorRT engine of %s: %s", network, " ".join(command))
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        partial.unlink(missing_ok=True)
        raise ExportError(f"{network}: trtexec did not run: {exc}") from None
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "no output")
        raise ExportError(f"{network}: trtexec failed (exit {done.returncode}): {last}")
    partial.replace(plan)
    seconds = time.monotonic() - started
    write_config(tensorrt_plan_config(gpu_config), repository, variant=TENSORRT_VARIANT)
    engine = Engine(network=network, plan=plan, precision=precision, seconds=seconds, tensorrt_version=_tensorrt_version(output))
    _record(folder, engine, trtexec)
    return engine


def _record(folder: Path, engine: Engine, trtexec: Path) -> None:
    path = folder / RECORD_NAME
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        record = {}
    record["tensorrt"] = {"precision": engine.precision, "trtexec": str(trtexec), "tensorrt_version": engine.tensorrt_version,
                          "plan_sha256": sha256(engine.plan), "build_seconds": round(engine.seconds, 1)}
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def build_engines(repository: Path, *, networks: Sequence[str] | None = None, precision: str | None = None,
                  trtexec: str | None = None, timeout: float | None = None) -> list[Engine]:
    """Build the engines of `networks` (default: every GPU network of `repository`).

    Raises:
        InputError: no GPU network, or a named one lacks its GPU variant; ExportError: no
            trtexec, or a build failed (the engines built before it are kept).
    """
    available = gpu_networks(repository)
    if not available:
        raise InputError(f"{repository}: no network has configs/{GPU_VARIANT}.pbtxt and 1/{WEIGHTS} "
                         "(install or export the models with --target gpu first)")
    chosen = list(networks) if networks else available
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise InputError(f"{repository}: {', '.join(unknown)} has no configs/{GPU_VARIANT}.pbtxt with 1/{WEIGHTS} "
                         f"(GPU networks: {', '.join(available)})")
    tool = find_trtexec(trtexec)
    return [build_engine(repository, network, tool, precision=precision, timeout=timeout) for network in chosen]
