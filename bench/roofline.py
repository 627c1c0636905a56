"""Benchmark: how close each network of a repository runs to this machine's arithmetic peak.

For every network (a model folder with `1/model.onnx`) of the repositories given (default: the
real legacy networks exported from `../shared/sct_models` and the seg_ms_lesion-sized nnU-Net
network with random weights that `tests/synthetic_nnunet.py` builds, both into a
temporary folder):

  FLOPs     counted from the ONNX graph at its real tile (`lesionseg.export.flops`: Conv,
            ConvTranspose, MatMul, Gemm; 2 per multiply-accumulate), batch 1;
  seconds   best of `--repeats` runs on that tile with each runtime of `--runtimes` (ONNX Runtime
            and OpenVINO FP32, as the server's network models configure them:
            `lesionseg.server.backend.runtimes.make_runner`, `--threads` threads: 1 is what
            each of the server's two instances uses); the roofline columns are the first
            runtime's, the others are printed as its speed-up;
  achieved  FLOPs / seconds, against the peaks measured in the same run with the same threads:
            the best square matrix product (1024^2 to 4096^2) in FP32 (numpy's BLAS, PyTorch,
            OpenVINO), BF16 (PyTorch, OpenVINO: AVX512-BF16 or AMX where the CPU has them) and
            INT8 (torch._int_mm: VNNI).

    .venv/bin/python bench/roofline.py [--repository DIR ...] [--threads 1] [--repeats 3] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic models of the tests


def _best_seconds(run, repeats: int) -> float:
    run()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def _openvino_matmul(size: int, precision: str, threads: int, repeats: int) -> float:
    """Seconds of one (size x size) @ (size x size) product compiled by OpenVINO with
    INFERENCE_PRECISION_HINT `precision` (f32, bf16)."""
    import openvino as ov
    import openvino.opset13 as ops

    a = ops.parameter([size, size], np.float32)
    b = ops.constant(np.random.default_rng(0).standard_normal((size, size), dtype=np.float32))
    compiled = ov.Core().compile_model(ov.Model([ops.matmul(a, b, False, False)], [a]), "CPU",
                                       {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1})
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    return _best_seconds(lambda: request.infer({0: x}), repeats)


def peaks(threads: int, sizes: tuple[int, ...] = (1024, 2048, 4096), repeats: int = 3) -> dict[str, dict[str, float]]:
    """GFLOP/s of square matrix products with `threads` threads, the best over `sizes`, per
    precision and library: FP32 (numpy's BLAS, PyTorch, OpenVINO), BF16 (PyTorch, OpenVINO) and
    INT8 (torch._int_mm), each where it runs."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    result: dict[str, dict[str, float]] = {"fp32": {}, "bf16": {}, "int8": {}}

    def record(kind: str, library: str, size: int, seconds: float) -> None:
        result[kind][library] = max(result[kind].get(library, 0.0), 2 * size**3 / seconds / 1e9)

    for size in sizes:
        a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
        with threadpool_limits(limits=threads):
            record("fp32", "numpy", size, _best_seconds(lambda: a @ a, repeats))
        t = torch.from_numpy(a)
        record("fp32", "torch", size, _best_seconds(lambda: torch.mm(t, t), repeats))
        b = t.to(torch.bfloat16)
        record("bf16", "torch", size, _best_seconds(lambda: torch.mm(b, b), repeats))
        try:
            i = torch.randint(-128, 127, (size, size), dtype=torch.int8)
            record("int8", "torch", size, _best_seconds(lambda: torch._int_mm(i, i), repeats))
        except (RuntimeError, AttributeError):
            pass
        try:
            for kind, hint in (("fp32", "f32"), ("bf16", "bf16")):
                record(kind, "openvino", size, _openvino_matmul(size, hint, threads, repeats))
        except ImportError:
            pass
    return {kind: by for kind, by in result.items() if by}


def best(peak: dict[str, dict[str, float]], kind: str) -> float:
    return max(peak[kind].values())


def default_repositories(tmp: Path, shared: Path) -> list[Path]:
    from lesionseg.export.legacy import export_sct_legacy
    from lesionseg.export.nnunet import export_nnunet
    from synthetic_nnunet import REALISTIC, make_model

    legacy = tmp / "legacy"
    export_sct_legacy(shared / "sct_models", legacy)
    nnunet = tmp / "nnunet"
    export_nnunet(make_model(tmp / "model", REALISTIC), nnunet, task="seg_ms_lesion_sized")
    return [legacy, nnunet]


def networks(repository: Path) -> list[tuple[str, Path, tuple[int, ...]]]:
    """(name, onnx path, per-item input dims from config.pbtxt) for each network, sorted."""
    from lesionseg.server.repository.modelconfig import read_config

    found = []
    for onnx_path in sorted(repository.glob("*/1/model.onnx")):
        config = read_config(onnx_path.parent.parent / "config.pbtxt")
        found.append((config.name, onnx_path, tuple(config.input[0].dims)))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, action="append", help="repository to measure (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="threads per network session and per peak (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--runtimes", default="onnxruntime,openvino",
                        help="network runtimes to time, the first one for the roofline columns (default onnxruntime,openvino)")
    args = parser.parse_args()
    args.runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]

    import onnx

    from lesionseg.export.flops import network_flops
    from lesionseg.server.backend.runtimes import make_runner

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        repositories = args.repository or default_repositories(Path(tmp), args.shared)
        peak = peaks(args.threads)
        rows = []
        for repository in repositories:
            for name, path, dims in networks(repository):
                shape = (1, *dims)
                flops = network_flops(onnx.load(str(path)), shape)
                feed_name = onnx.load(str(path), load_external_data=False).graph.input[0].name
                feed = {feed_name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
                row = {"network": name, "tile": "x".join(map(str, dims)), "gflop": flops / 1e9}
                for runtime in args.runtimes:
                    runner = make_runner(path, runtime=runtime, threads=args.threads, spinning=False)
                    row[runtime] = _best_seconds(lambda: runner.run(None, feed), args.repeats)
                row["seconds"] = row[args.runtimes[0]]
                row["gflops"] = flops / row["seconds"] / 1e9
                rows.append(row)
    import onnxruntime
    import torch

    print(f"roofline: python bench/roofline.py --threads {args.threads}")
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"measured matrix-product peaks, {args.threads} thread(s), GFLOP/s (best of 1024^2..4096^2):")
    for kind, by in peak.items():
        print(f"  {kind.upper():5} {best(peak, kind):6.0f}  (" + ", ".join(f"{lib} {v:.0f}" for lib, v in by.items()) + ")")
    kinds = [k for k in ("fp32", "bf16", "int8") if k in peak]
    others = args.runtimes[1:]
    print(f"roofline columns: {args.runtimes[0]} FP32" + (f"; {', '.join(others)} FP32 as speed-up over it" if others else ""))
    print(f"{'network':32} {'tile':>14} {'GFLOP':>8} {'seconds':>8} {'GFLOP/s':>8}" + "".join(f" {'of ' + k.upper():>8}" for k in kinds)
          + "".join(f" {r[:8] + ' x':>10}" for r in others))
    for row in rows:
        print(f"{row['network']:32} {row['tile']:>14} {row['gflop']:8.2f} {row['seconds']:8.3f} {row['gflops']:8.1f}"
              + "".join(f" {row['gflops'] / best(peak, k):8.0%}" for k in kinds)
              + "".join(f" {row['seconds'] / row[r]:10.2f}" for r in others))
    if args.json:
        args.json.write_text(json.dumps({"peaks": peak, "networks": rows, "threads": args.threads}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
