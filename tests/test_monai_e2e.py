"""SCT 6.5's contrast-agnostic MONAI model through Triton vs MONAI itself (the oracle).

The oracle runs SCT's transform chain with MONAI (Orientationd RPI, Spacingd 1 mm order 2,
ResizeWithPadOrCropd 64x192, DivisiblePadd 32, NormalizeIntensityd, sliding_window_inference
64x192x320 overlap 0.5 gaussian, ReLU / max, Invertd, thresholds 0.1 and 1) on the same random
weights; required: Dice >= 0.99 of the masks binarised > 0.5 (SCT's default).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import MONAI_FEATURES, MONAI_TASK
from served import infer_task

from lesionseg.client.cli import main
from lesionseg.core.nifti import load_nifti

pytestmark = [pytest.mark.server, pytest.mark.realdata, pytest.mark.slow]


def monai_oracle(image_path: Path) -> np.ndarray:
    import torch
    from monai import transforms as T
    from monai.inferers import sliding_window_inference

    from lesionseg.export.monai import build_network

    torch.manual_seed(0)  # the weights make_monai_checkpoint saved
    net = build_network(len(MONAI_FEATURES), MONAI_FEATURES)
    pre = T.Compose([
        T.LoadImaged(keys=["image"], image_only=False), T.EnsureChannelFirstd(keys=["image"]),
        T.Orientationd(keys=["image"], axcodes="RPI"), T.Spacingd(keys=["image"], pixdim=(1.0, 1.0, 1.0), mode=2),
        T.ResizeWithPadOrCropd(keys=["image"], spatial_size=(64, 192, -1), mode="edge"),
        T.DivisiblePadd(keys=["image"], k=32, mode="edge"),
        T.NormalizeIntensityd(keys=["image"], nonzero=False, channel_wise=False),
    ])
    data = pre({"image": str(image_path)})
    with torch.no_grad():
        pred = sliding_window_inference(data["image"][None], (64, 192, 320), 4, net, overlap=0.5, mode="gaussian")
    pred = torch.relu(pred)
    if pred.max() > 0:
        pred = pred / pred.max()
    data["pred"] = pred[0]
    data["pred"].applied_operations = data["image"].applied_operations
    post = T.Compose([
        T.Invertd(keys=["pred"], transform=pre, orig_keys=["image"], nearest_interp=False, to_tensor=True),
        T.ThresholdIntensityd(keys=["pred"], threshold=0.1),
        T.ThresholdIntensityd(keys=["pred"], threshold=1.0, above=False, cval=1.0),
    ])
    return post(data)["pred"][0].numpy()


@pytest.mark.parametrize("image", ["t2/t2.nii.gz", "t2s/t2s.nii.gz"])
def test_dice_against_monai(nnunet_server, shared: Path, image: str) -> None:
    path = shared / "sct_testing_data" / image
    seg, prob, params = infer_task(nnunet_server.settings.grpc_url, load_nifti(path), MONAI_TASK)
    reference = monai_oracle(path)
    a, b = seg > 0, reference > 0.5
    dice = 2 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())
    diff = float(np.abs(prob[0] / 255.0 - reference).max())
    print(f"{image}: Dice {dice:.5f} ({a.sum()} vs {b.sum()} voxels), max soft difference {diff:.4f}")
    assert b.sum() > 0 and dice >= 0.99
    assert params["orientation"] == "LAS"  # MONAI's axcodes "RPI" written as SCT names it


def test_soft_output_with_thr_0(nnunet_server, shared: Path, tmp_path: Path) -> None:
    image = shared / "sct_testing_data" / "t2" / "t2.nii.gz"
    out = tmp_path / "soft.nii.gz"
    assert main(["deepseg", "-i", str(image), "-task", MONAI_TASK, "-thr", "0", "-o", str(out), "-url", nnunet_server.settings.grpc_url]) == 0
    soft = np.asanyarray(nib.load(out).dataobj)
    assert soft.dtype == np.float32 and soft.max() <= 1 and len(np.unique(soft)) > 2  # a soft map, as SCT keeps it
