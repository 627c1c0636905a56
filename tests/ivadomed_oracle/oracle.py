"""ivadomed as the oracle of lesionseg's ivadomed pipeline; run in a subprocess with ./shim first
on PYTHONPATH (see shim/README.md).

    python oracle.py make DIR N          N members DIR/seed<i>/<NAME>/<NAME>.{onnx,json}, ivadomed's
                                         Modified3DUNet with random weights (seeded)
    python oracle.py segment DIR IMG OUT SCT's ensemble: ivadomed.inference.segment_volume on every
                                         member, np.mean over members -> OUT (.npy, input grid)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

NAME = "model_seg_ms_lesion_mp2rage"
#: the training config of model_seg_ms_mp2rage (r20230127) with fewer filters
CONFIG = {
    "loader_parameters": {
        "slice_axis": "axial", "target_suffix": ["_lesion-manualNeuroPoly"],
        "contrast_params": {"training_validation": ["UNIT1"], "testing": ["UNIT1"], "balance": {}},
        "roi_params": {"suffix": None, "slice_filter_roi": None},
        "slice_filter_params": {"filter_empty_mask": False, "filter_empty_input": True},
    },
    "default_model": {"name": "Unet", "dropout_rate": 0.3, "bn_momentum": 0.1, "final_activation": "sigmoid", "depth": 3},
    "Modified3DUNet": {"applied": True, "length_3D": [32, 64, 64], "stride_3D": [1, 1, 64], "attention": False, "n_filters": 4},
    "transformation": {
        "Resample": {"hspace": 1, "wspace": 1, "dspace": 1},
        "CenterCrop": {"size": [32, 64, 128]},
        "NormalizeInstance": {"applied_to": ["im"]},
    },
    "postprocessing": {"remove_noise": {"thr": 0.01}, "binarize_prediction": {"thr": 0.5}, "remove_small": {"unit": "vox", "thr": 3}},
    "training_parameters": {"batch_size": 16},
}


def make(root: Path, n: int) -> None:
    import torch
    from ivadomed.models import Modified3DUNet

    for seed in range(1, n + 1):
        folder = root / f"seed{seed}" / NAME
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        net = Modified3DUNet(in_channel=1, out_channel=1, n_filters=4, final_activation="sigmoid").eval()
        with torch.no_grad():  # decisive random outputs: scale the last convolution
            last = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)][-1]
            last.weight.mul_(12.0)
        example = torch.zeros(1, 1, 32, 64, 64)
        axes = {0: "batch", 2: "h", 3: "w", 4: "d"}
        torch.onnx.export(net, example, str(folder / f"{NAME}.onnx"), input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": axes, "output": axes}, opset_version=17, dynamo=False)
        (folder / f"{NAME}.json").write_text(json.dumps(CONFIG, indent=2))


def segment(root: Path, image: Path, out: Path) -> None:
    from ivadomed import inference

    members = sorted(p for p in root.rglob(NAME) if (p / f"{NAME}.onnx").is_file())
    outputs = []
    for member in members:
        preds, _ = inference.segment_volume(str(member), [str(image)], gpu_id=0)
        outputs.append(np.asanyarray(preds[0].get_fdata()))
    np.save(out, np.mean(outputs, axis=0))


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    from loguru import logger

    logger.remove()
    if sys.argv[1] == "make":
        make(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        segment(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
