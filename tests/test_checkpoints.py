"""Checkpoints load with `torch.load(weights_only=True)` only (issue 23, finding 3): a file that
needs full unpickling (arbitrary code on load) is refused with one line, and nothing in it runs;
nnU-Net's own checkpoint layout (numpy scalars in its logging, a torch.device in its init args)
loads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the export extra (torch) is not installed")


class Payload:
    """Pickles as a call of os.system: what a hostile checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_needing_full_unpickling_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    from lesionseg.core.errors import InputError
    from lesionseg.export.torch_onnx import load_checkpoint

    marker = tmp_path / "code_ran"
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {"w": torch.zeros(2)}, "extra": Payload(marker)}, path)
    with pytest.raises(InputError, match=rf"{path}: refused: it needs full unpickling, which can run code \(it holds posix.system\)"):
        load_checkpoint(path)
    assert not marker.exists(), "the checkpoint's code ran"


def test_nnunets_checkpoint_layout_loads(tmp_path: Path) -> None:
    """As nnUNetTrainer.save_checkpoint writes it (nnunetv2 2.x): optimizer state, numpy floats in
    the logging and _best_ema, a torch.device among the init args."""
    from lesionseg.export.torch_onnx import load_checkpoint

    net = torch.nn.Conv3d(1, 2, 3)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    net(torch.zeros(1, 1, 4, 4, 4)).sum().backward()
    optimiser.step()
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": net.state_dict(), "optimizer_state": optimiser.state_dict(), "grad_scaler_state": None,
                "logging": {"mean_fg_dice": [np.float64(0.5), np.float64(0.6)], "ema_fg_dice": [np.float32(0.55)],
                            "epoch_start_timestamps": [1.0], "lrs": [0.01]},
                "_best_ema": np.float64(0.61), "current_epoch": 1000,
                "init_args": {"plans": {"a": 1}, "configuration": "3d_fullres", "fold": 0, "dataset_json": {},
                              "device": torch.device("cpu")},
                "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)}, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["network_weights"]["weight"], net.state_dict()["weight"])
    assert float(loaded["_best_ema"]) == pytest.approx(0.61)
