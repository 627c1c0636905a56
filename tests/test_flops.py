"""FLOPs counted from an ONNX graph (`lesionseg.export.flops`) against PyTorch's own counter
(`torch.utils.flop_counter.FlopCounterMode`, 2 FLOPs a multiply-accumulate) on the module the
graph was exported from."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs the export extra (torch)")

from lesionseg.export.flops import layer_flops, network_flops  # noqa: E402
from lesionseg.export.torch_onnx import to_onnx  # noqa: E402


class Net(torch.nn.Module):
    """Conv (grouped, strided, padded), ConvTranspose, a 1x1x1 Conv and a MatMul: a U-Net's layers."""

    def __init__(self) -> None:
        super().__init__()
        self.down = torch.nn.Conv3d(2, 8, 3, stride=2, padding=1)
        self.grouped = torch.nn.Conv3d(8, 8, 3, padding=1, groups=4)
        self.up = torch.nn.ConvTranspose3d(8, 4, 2, stride=2)
        self.head = torch.nn.Conv3d(4, 3, 1)
        self.mix = torch.nn.Parameter(torch.randn(12, 12))

    def forward(self, x):
        y = self.head(self.up(torch.relu(self.grouped(torch.relu(self.down(x))))))
        return torch.matmul(y, self.mix)


def test_graph_flops_equal_torchs_count() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    net = Net().eval()
    model, _ = to_onnx(net, (12, 12, 12), 2)
    for batch in (1, 3):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(torch.randn(batch, 2, 12, 12, 12))
        assert network_flops(model, (batch, 2, 12, 12, 12)) == counter.get_total_flops()
    ops = sorted(layer.op for layer in layer_flops(model, (1, 2, 12, 12, 12)))
    assert ops == ["Conv", "Conv", "Conv", "ConvTranspose", "MatMul"]


def test_wrong_rank_is_refused() -> None:
    model, _ = to_onnx(Net().eval(), (12, 12, 12), 2)
    with pytest.raises(ValueError, match="has 5 axes"):
        network_flops(model, (2, 12, 12, 12))
