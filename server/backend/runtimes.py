"""The runtimes a Python-backend network model can run its `model.onnx` with: ONNX Runtime or
OpenVINO, behind one call, `run(output_names, feeds) -> list of arrays`.

Both run the same ONNX file on the CPU with the same thread budget. OpenVINO compiles the graph
with its dynamic batch axis once (as fast per item as a static shape, by measurement) and
keeps one infer request; FP32 is asked for explicitly (`INFERENCE_PRECISION_HINT` f32), since the
CPU plugin would otherwise pick BF16 on CPUs with native BF16. Its threads are not pinned to cores:
several stub processes share the cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lesionseg.core.enums import Precision, Runtime
from lesionseg.core.errors import UsageError

RUNTIMES = (Runtime.ONNXRUNTIME, Runtime.OPENVINO)
#: lesionseg's precision names -> OpenVINO's INFERENCE_PRECISION_HINT
OPENVINO_PRECISIONS = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.FP16: "f16"}
#: a network's exported precision -> the precision its runner is asked for: INT8 lives in the
#: quantized graph itself (QuantizeLinear/DequantizeLinear pairs), everything around it stays FP32.
RUNNER_PRECISION = {Precision.FP32: Precision.FP32, Precision.BF16: Precision.BF16, Precision.INT8: Precision.FP32,
                    Precision.FP16: Precision.FP16}


def make_session(path: Path, *, intra_op_threads: int = 0, inter_op_threads: int = 1, spinning: bool = True,
                 memory_pattern: bool = True, arena: bool = True) -> Any:
    """An ONNX Runtime CPU session for `path` (threads 0 = ONNX Runtime's default: one per core;
    `spinning` False makes idle pool threads sleep instead of busy-waiting, which matters when
    several sessions and Python stubs share few cores; `memory_pattern` False stops ONNX Runtime
    from planning one block for all of a shape's intermediate tensors, which its arena then keeps
    beside the per-tensor allocations)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.enable_mem_pattern = memory_pattern
    options.enable_cpu_mem_arena = arena
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OpenVinoRunner:
    """`model.onnx` compiled by OpenVINO's CPU plugin; `run` has ONNX Runtime's signature."""

    def __init__(self, path: Path, *, threads: int = 0, precision: str = "fp32") -> None:
        try:
            import openvino as ov
        except ImportError:
            raise UsageError("the openvino runtime needs the openvino package: pip install openvino") from None
        if precision not in OPENVINO_PRECISIONS:
            raise UsageError(f"unknown precision {precision!r} (choose from {', '.join(OPENVINO_PRECISIONS)})")
        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision], "NUM_STREAMS": 1,
                                  "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        # a tensor may carry several names in OpenVINO (the ONNX output's among them)
        self.outputs = {name: port for port in self.compiled.outputs for name in port.get_names()}
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(dict(feeds))  # copies the outputs out of the request's buffers
        return [np.asarray(results[self.outputs[name]]) for name in (output_names or self.output_names)]


#: the /proc/cpuinfo flags that choose OpenVINO's and ONNX Runtime's reduced-precision kernels
PRECISION_ISA = ("avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_fp16")


def cpu_description(cpuinfo: str | None = None) -> str:
    """The CPU model and its reduced-precision instruction sets (PRECISION_ISA), from /proc/cpuinfo."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "an unknown CPU"
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    isa = [f for f in PRECISION_ISA if f in flags]
    return f"{fields.get('model name', 'an unknown CPU')} ({', '.join(isa) or 'no reduced-precision instructions'})"


#: a reduced-precision network's parity report, beside its config (written by lesionseg.export.networks)
PARITY_REPORT = "parity.json"


def other_cpu_warning(report: Path, here: str | None = None) -> str:
    """A one-line warning when the parity report at `report` (JSON with a "cpu" field) was computed
    on a CPU whose reduced-precision instructions differ from `here`'s (default: this machine's);
    "" when they match or the report names no CPU."""
    import json

    try:
        computed_on = str(json.loads(report.read_text()).get("cpu", ""))
    except (OSError, ValueError, AttributeError):
        return f"{report}: no readable parity report"
    here = cpu_description() if here is None else here
    if not computed_on or description_isa(computed_on) == description_isa(here):
        return ""
    return (f"its parity report was computed on {computed_on}, this server runs on {here}: reduced-precision "
            "kernels differ between these instructions, so export again on this CPU to have a report that covers it")


def description_isa(description: str) -> frozenset[str]:
    """The PRECISION_ISA instructions a `cpu_description` string names."""
    inside = description.rsplit("(", 1)[-1].rstrip(")") if "(" in description else ""
    return frozenset(f.strip() for f in inside.split(",") if f.strip() in PRECISION_ISA)


def make_runner(path: Path, *, runtime: str = "onnxruntime", threads: int = 0, spinning: bool = True,
                precision: str = "fp32", memory_pattern: bool = True, arena: bool = True, run_batch: int = 0) -> Any:
    """A runner of `path` on `runtime` (see RUNTIMES) with `threads` threads (0: the runtime's
    default). `precision` is the arithmetic OpenVINO is asked for (OPENVINO_PRECISIONS); ONNX
    Runtime runs the graph as it is (FP32, or the INT8 a quantized graph spells out), so it takes
    "fp32" only. `memory_pattern` is ONNX Runtime's (see `make_session`); `run_batch` > 0 runs a
    larger batch `run_batch` items at a time (`ChunkedRunner`)."""
    if runtime == Runtime.ONNXRUNTIME:
        if precision != Precision.FP32:
            raise UsageError(f"ONNX Runtime runs {precision} only as a quantized graph, not as a precision hint: use openvino")
        runner: Any = make_session(path, intra_op_threads=threads, spinning=spinning, memory_pattern=memory_pattern,
                                          arena=arena)
    elif runtime == Runtime.OPENVINO:
        runner = OpenVinoRunner(path, threads=threads, precision=precision)
    else:
        raise UsageError(f"unknown network runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    return ChunkedRunner(runner, run_batch) if run_batch > 0 else runner


class ChunkedRunner:
    """`runner` run on at most `size` items of the batch axis (axis 0 of every input) at a time,
    each chunk's outputs copied into the whole batch's: a network's working memory grows with the
    batch it runs, while its time per item on the CPU barely changes beyond one item (bench/README.md,
    "Server memory"). The copy matters: ONNX Runtime's outputs are views of its arena, and one held
    while the next chunk runs splits the arena so that it grows by another block. `run` has ONNX Runtime's signature."""

    def __init__(self, runner: Any, size: int) -> None:
        if size < 1:
            raise UsageError(f"run batch must be >= 1, not {size}")
        self.runner, self.size = runner, size

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        n = len(next(iter(feeds.values())))
        if n <= self.size:
            return self.runner.run(output_names, feeds)
        merged: list[np.ndarray] = []
        for start in range(0, n, self.size):
            outputs = self.runner.run(output_names, {k: v[start : start + self.size] for k, v in feeds.items()})
            if not merged:
                merged = [np.empty((n, *out.shape[1:]), out.dtype) for out in outputs]
            for whole, out in zip(merged, outputs):
                whole[start : start + len(out)] = out
            del outputs, out  # before the next chunk runs
        return merged
