"""Test networks for sc-crop in the exact ONNX format the package loads (`det_model.onnx`,
`cls_model.onnx` of its v0.0.11 release): a YOLO26n detector with one class, exported by
ultralytics 8.4.190 as sc-crop's training repository exports it (imgsz 320, opset 19, dynamic
height and width, end to end: (N, 300, 6) rows x1, y1, x2, y2, confidence, class), and a
YOLO26n classifier with two classes (no cord, cord) at a fixed 1 x 3 x 320 x 320, whose output is
already a softmax. Weights are random, but not their confidences: the detector's class branch is
amplified and its bias lowered so that confidences spread over (0, 1) (at the default init nothing
passes sc-crop's 0.1, or everything ties), so the whole chain (boxes, runs, classifier,
aggregation, padding) is exercised.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

DETECTOR, CLASSIFIER = "det_model.onnx", "cls_model.onnx"

#: the test models' crop_metadata.json margins (mm): narrow, so that the random test detector's
#: boxes crop the real images instead of growing to their edges
PADDING = {"pad_superior": 10.0, "pad_inferior": 12.0, "pad_left": 4.0, "pad_right": 5.0, "pad_anterior": 3.0,
           "pad_posterior": 6.0}


def _yaml(kind: str, classes: int, folder: Path) -> Path:
    """ultralytics' YOLO26n model file with `classes` classes."""
    import ultralytics

    source = Path(ultralytics.__file__).parent / "cfg" / "models" / "26" / ("yolo26-cls.yaml" if kind == "classify" else "yolo26.yaml")
    text = source.read_text().replace("nc: 80", f"nc: {classes}").replace("nc: 1000", f"nc: {classes}")
    target = folder / ("yolo26n-cls.yaml" if kind == "classify" else "yolo26n.yaml")
    target.write_text(text)
    return target


def make(folder: Path, *, seed: int = 0, detector_gain: float = 40.0, detector_bias: float = -1.0) -> Path:
    """Write det_model.onnx and cls_model.onnx into `folder`; returns it."""
    import torch
    from ultralytics import YOLO

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sccrop-models-") as tmp:
        work = Path(tmp)
        old = os.getcwd()
        os.chdir(work)  # ultralytics writes its exports next to the weights and settings in the cwd
        try:
            torch.manual_seed(seed)
            detector = YOLO(str(_yaml("detect", 1, work)), task="detect")
            with torch.no_grad():
                head = detector.model.model[-1]
                for branch in (getattr(head, "one2one_cv3", None) or head.cv3):
                    branch[-1].weight.mul_(detector_gain)
                    branch[-1].bias.fill_(detector_bias)
            torch.save({"model": detector.model, "train_args": {}}, work / "det.pt")
            exported = YOLO(str(work / "det.pt"), task="detect").export(format="onnx", imgsz=320, opset=19, dynamic=True,
                                                                         simplify=False, nms=False, verbose=False)
            shutil.copyfile(exported, folder / DETECTOR)
            torch.manual_seed(seed + 1)
            classifier = YOLO(str(_yaml("classify", 2, work)), task="classify")
            torch.save({"model": classifier.model, "train_args": {}}, work / "cls.pt")
            exported = YOLO(str(work / "cls.pt"), task="classify").export(format="onnx", imgsz=320, opset=19, dynamic=False,
                                                                          simplify=False, verbose=False)
            shutil.copyfile(exported, folder / CLASSIFIER)
        finally:
            os.chdir(old)
    return folder
