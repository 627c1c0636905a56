"""Test networks for sc-crop in the exact ONNX format the package loads (`det_model.onnx`,
`cls_model.onnx` of its v0.0.11 release): a YOLO26n detector with one class, exported by
ultralytics 8.4.190 as sc-crop's training repository exports it (imgsz 320, opset 19, dynamic
height and width, end to end: (N, 300, 6) rows x1, y1, x2, y2, confidence, class), and a
YOLO26n classifier with two classes (no cord, cord) at a fixed 1 x 3 x 320 x 320, whose output is
already a softmax. Weights are random, but not their confidences: the detector's class branch is
amplified and its bias lowered so that confidences spread over (0, 1) (at the default init nothing
passes sc-crop's 0.1, or everything ties), so the whole chain (boxes, runs, classifier,
aggregation, padding) is exercised.

`make(..., trained=True)`: the detector is trained instead, for a few minutes, on the axial slabs
sc-crop builds from the real images of ../shared/sct_testing_data with boxes from their cord masks
(`detector_dataset`: the package's own reorientation, resampling and slab functions), so that it
really finds cords: the boxes of a real detector, not of random weights. ultralytics' trainer
imports torchvision only to time its validator's import; PyPI's torchvision cannot load beside
the CPU torch here ("operator torchvision::nms does not exist"), so an empty module stands in for
it while training when the real one fails, and the trainer's validation passes (NMS, on the
training slabs themselves) are left out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from trained_nnunet import CORD_PAIRS

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


def detector_dataset(data_root: Path, out: Path) -> Path:
    """sc-crop's detector inputs of every (image, cord mask) pair of tests/trained_nnunet.py as a
    YOLO dataset (PNG slabs as sc-crop feeds them: LAS, 1 x 1 x 10 mm, three neighbouring slices,
    per-slice percentile scaling; one box per slab holding cord, none otherwise); returns its yaml."""
    import cv2
    import nibabel as nib
    import numpy as np
    from nibabel.processing import resample_from_to
    from sc_crop.crop import build_slices, load_config, reorient_to_las, resample_for_inference

    config = load_config()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for image_name, mask_name in CORD_PAIRS:
        image, mask = nib.load(str(data_root / image_name)), nib.load(str(data_root / mask_name))
        mask = resample_from_to(nib.Nifti1Image((np.asarray(mask.dataobj) > 0).astype(np.float32), mask.affine), image, order=1)
        data = np.asarray(resample_for_inference(reorient_to_las(image), config["si_res"], config["inplane_res"]).dataobj, np.float32)
        cord = np.asarray(resample_for_inference(reorient_to_las(mask), config["si_res"], config["inplane_res"]).dataobj) > 0.5
        slabs, indices = build_slices(data, config["channels"], config["norm_scope"])
        for slab, index in zip(slabs, indices):
            name = f"{Path(image_name).name[:-7]}_{index:03d}"
            cv2.imwrite(str(out / "images" / f"{name}.png"), slab)  # numpy channel order, as sc-crop passes its arrays
            present = np.argwhere(cord[:, :, index].T[::-1, ::-1])  # the slab's (row, col) layout
            lines = []
            if len(present):
                (r0, c0), (r1, c1) = present.min(0), present.max(0) + 1
                rows, cols = slab.shape[:2]
                lines.append(f"0 {(c0 + c1) / 2 / cols:.6f} {(r0 + r1) / 2 / rows:.6f} {(c1 - c0) / cols:.6f} {(r1 - r0) / rows:.6f}")
            (out / "labels" / f"{name}.txt").write_text("\n".join(lines))
    spec = out / "data.yaml"
    spec.write_text(f"path: {out}\ntrain: images\nval: images\nnames:\n  0: cord\n")
    return spec


def _train_detector(detector, spec: Path, work: Path, *, epochs: int, seed: int) -> Path:
    """ultralytics' trainer on the dataset `spec`; returns the last weights."""
    import sys
    import types

    stand_in = False
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - see the module docstring
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        stand_in = True
    from ultralytics.models.yolo.detect import DetectionTrainer

    class Trainer(DetectionTrainer):
        """ultralytics' detection trainer without its validation passes: their NMS needs torchvision,
        and the slabs they would measure are the training set."""

        def validate(self):
            return {}, None  # no metrics, no fitness: what the trainer takes for a skipped validation

        def final_eval(self) -> None:
            pass

    try:
        detector.train(trainer=Trainer, data=str(spec), epochs=epochs, imgsz=320, batch=8, device="cpu", workers=0, seed=seed,
                       deterministic=True, plots=False, val=False, amp=False, project=str(work / "runs"), name="det",
                       exist_ok=True, verbose=False)
    finally:
        if stand_in:
            del sys.modules["torchvision"]
    return work / "runs" / "det" / "weights" / "last.pt"


def make(folder: Path, *, seed: int = 0, detector_gain: float = 40.0, detector_bias: float = -1.0, trained: bool = False,
         data_root: Path | None = None, epochs: int = 30) -> Path:
    """Write det_model.onnx and cls_model.onnx into `folder`; returns it. `trained`: the detector
    trained `epochs` epochs on the slabs of `data_root` (see the module docstring)."""
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
            if trained:
                if data_root is None:
                    raise ValueError("a trained detector needs the images (data_root)")
                shutil.copyfile(_train_detector(detector, detector_dataset(data_root, work / "dataset"), work, epochs=epochs,
                                                seed=seed), work / "det.pt")
            else:
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
