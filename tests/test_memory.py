"""The networks' memory settings: a batch run a few items at a time gives the whole batch's
outputs, holds less memory doing it, and the CPU configs carry the settings.

The server-level numbers (nnU-Net and legacy servers' peaks against the settings before) are
measured by bench/memory.py, not asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lesionseg.core.errors import UsageError
from lesionseg.server.backend.runtimes import ChunkedRunner, make_runner


def conv_model(path: Path, *, channels: int = 16) -> Path:
    """A one-layer 3D conv net `input` (N, 1, D, H, W) -> `output` (N, channels, D, H, W), FP32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((channels, 1, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["conv"], pads=[1] * 6), helper.make_node("Relu", ["conv"], ["output"])],
        "conv3d",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "D", "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", channels, "D", "H", "W"])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_chunks_give_the_whole_batch(tmp_path: Path, runtime: str, size: int) -> None:
    path = conv_model(tmp_path / "model.onnx")
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 9, 10)).astype(np.float32)
    whole = make_runner(path, runtime=runtime, threads=1).run(["output"], {"input": x})[0]
    chunked = make_runner(path, runtime=runtime, threads=1, run_batch=size)
    assert isinstance(chunked, ChunkedRunner)
    got = chunked.run(["output"], {"input": x})[0]
    assert got.shape == whole.shape == (5, 16, 8, 9, 10)
    np.testing.assert_allclose(got, whole, rtol=1e-6, atol=1e-6)
    small = chunked.run(None, {"input": x[:1]})[0]  # at most `size` items: one call, as is
    np.testing.assert_allclose(small, whole[:1], rtol=1e-6, atol=1e-6)


class ReusingRunner:
    """Writes every output into one buffer it hands out again, as ONNX Runtime's arena may: a
    caller that keeps an output past the next call sees it overwritten."""

    def __init__(self) -> None:
        self.buffer = np.full((8, 2), np.nan, np.float32)

    def run(self, output_names, feeds):
        x = feeds["input"]
        out = self.buffer[: len(x)]
        out[:] = x[:, :1] * np.array([1, -1], np.float32)
        return [out]


def test_chunks_are_copied_out_of_the_runners_buffers() -> None:
    runner = ReusingRunner()
    x = np.arange(7, dtype=np.float32).reshape(7, 1)
    got = ChunkedRunner(runner, 2).run(None, {"input": x})[0]
    np.testing.assert_array_equal(got, np.stack([x[:, 0], -x[:, 0]], axis=1))
    assert not np.shares_memory(got, runner.buffer)


def test_run_batch_must_be_positive() -> None:
    with pytest.raises(UsageError, match="run batch must be >= 1"):
        ChunkedRunner(ReusingRunner(), 0)


PEAK = """
import sys
from pathlib import Path
import numpy as np
from lesionseg.server.backend.runtimes import make_runner
runner = make_runner(Path(sys.argv[1]), threads=1, run_batch=int(sys.argv[2]), memory_pattern=sys.argv[3] == "1")
x = np.ones((8, 1, 64, 64, 64), np.float32)
for _ in range(3):
    out = runner.run(["output"], {"input": x})
    del out
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


def peak_kib(path: Path, run_batch: int, memory_pattern: bool) -> int:
    result = subprocess.run([sys.executable, "-c", PEAK, str(path), str(run_batch), str(int(memory_pattern))],
                            capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_one_item_at_a_time_holds_less(tmp_path: Path) -> None:
    """8 items of 64^3 through a 16-channel conv: the whole batch's output alone is 128 MiB, one
    item's 16 MiB; run one at a time without a memory pattern the process peaks well below the
    whole batch run with ONNX Runtime's defaults (the copy into the batch output is counted)."""
    path = conv_model(tmp_path / "model.onnx")
    before = peak_kib(path, 0, True)
    after = peak_kib(path, 1, False)
    assert before - after > 64 * 1024, (before, after)


def test_cpu_configs_carry_the_memory_settings() -> None:
    from lesionseg.server.repository.entry import NetworkEntry
    from lesionseg.server.repository.legacy import network_entry
    from lesionseg.server.repository.modelconfig import parameters, to_proto
    from lesionseg.server.repository.networks import network_spec

    default = to_proto(network_spec(NetworkEntry(name="fold0_net", input_name="input", output_names=("logits",),
                                                 input_dims=(1, 64, 128, 128), output_dims=(2, 64, 128, 128)), backend="python"))
    assert [g.count for g in default.instance_group] == [2]  # nnU-Net, MONAI, ivadomed networks
    assert {k: parameters(default)[k] for k in ("run_batch", "ort_mem_pattern", "intra_op_threads")} == {
        "run_batch": "1", "ort_mem_pattern": "0", "intra_op_threads": "1"}
    entry = network_entry("t2s_lesion")  # the legacy networks: one stub process each, two threads
    python = to_proto(network_spec(entry, backend="python"))
    assert [g.count for g in python.instance_group] == [1]
    assert {k: parameters(python)[k] for k in ("run_batch", "ort_mem_pattern", "intra_op_threads")} == {
        "run_batch": "1", "ort_mem_pattern": "0", "intra_op_threads": "2"}
    native = parameters(to_proto(network_spec(entry, backend="onnxruntime")))  # Triton's onnxruntime backend
    assert native == {"intra_op_thread_count": "2", "enable_mem_pattern": "0"}
