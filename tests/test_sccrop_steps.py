"""sc-crop's detection steps (server/pipelines/sccrop.py) against the sc-crop package itself (PyPI
`sc-crop` 0.12.1; its detector and classifier are not needed for these steps), on every real image
of ../shared/sct_testing_data and on random boxes. Tolerance: none (every voxel, every index)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

from lesionseg.core.nibabel_import import nibabel as nib
from lesionseg.server.pipelines import sccrop

IMAGES = ["t1/t1w.nii.gz", "t2/t2.nii.gz", "t2/t2_fake_lesion.nii.gz", "t2s/t2s.nii.gz", "t2s/t2s_uncropped.nii.gz"]


@pytest.fixture(scope="module")
def oracle():
    pytest.importorskip("sc_crop", reason="sc-crop (the oracle) not installed: pip install --no-deps sc-crop==0.12.1")
    import importlib

    return importlib.import_module("sc_crop.crop")  # the module: the package's `crop` is its function


def load(name: str):
    return nib.load(str(SHARED / "sct_testing_data" / name))


@pytest.mark.realdata
@pytest.mark.parametrize("name", IMAGES)
def test_detection_volume_and_slices_equal_the_package(name: str, shared: Path, oracle) -> None:
    img = load(name)
    ours = sccrop.detection_volume(np.asanyarray(img.dataobj), img.affine, img.header.get_zooms())
    las = oracle.reorient_to_las(img)
    theirs = oracle.resample_for_inference(las, sccrop.SI_MM, sccrop.INPLANE_MM).get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(ours.volume, theirs)
    assert ours.las_shape == las.shape[:3]
    assert ours.las_zooms == tuple(float(z) for z in las.header.get_zooms()[:3])
    np.testing.assert_array_equal(ours.ornt, nib.io_orientation(img.affine))
    slices, order = sccrop.slab_slices(ours.volume)
    their_slices, their_order = oracle.build_slices(theirs, 3, "slice_all")
    assert order == their_order
    np.testing.assert_array_equal(slices, np.stack(their_slices))
    assert slices.dtype == np.uint8 and slices.shape[1:] == (theirs.shape[1], theirs.shape[0], 3)


def random_detections(rng: np.random.Generator, n_slices: int) -> dict[int, tuple[float, float, float, float]]:
    zs = sorted(set(int(z) for z in rng.integers(0, n_slices, size=rng.integers(1, n_slices + 1))))
    return {z: tuple(float(v) for v in (rng.random(), rng.random(), rng.random() * 0.5, rng.random() * 0.5)) for z in zs}


def test_box_steps_equal_the_package(oracle, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    for trial in range(300):
        shape = tuple(int(v) for v in rng.integers(5, 120, size=3))
        zooms = tuple(float(v) for v in rng.choice([0.5, 0.8, 1.0, 3.0, 5.0], size=3))
        si_zoom = zooms[2] / sccrop.SI_MM
        n_slices = max(1, int(round(shape[2] * si_zoom)))
        detections = random_detections(rng, n_slices)
        # step 4: the classifier, one probability per slice, asked in the package's order
        probability = {z: float(rng.random()) for z in range(n_slices)}

        class Session:
            def run(self, _outputs, feeds):
                z = int(feeds["images"])
                return [np.array([[1 - probability[z], probability[z]]])]

        monkeypatch.setattr(oracle, "_letterbox_cls", lambda sl, imgsz: sl)
        kept = oracle.cls_comp_filter(detections, [np.array(z) for z in range(n_slices)], list(range(n_slices)), Session(), 0.5)
        assert sccrop.first_cord_run(detections, probability.__getitem__) == kept
        # steps 5-7
        box = sccrop.las_box(kept, shape, si_zoom)
        theirs = oracle.aggregate_bbox_3d(kept, *shape, si_zoom)
        assert dataclasses_tuple(box) == (theirs.rl1, theirs.rl2, theirs.ap1, theirs.ap2, theirs.z1, theirs.z2)
        margins = [float(v) for v in rng.uniform(0, 60, size=6)]
        padding = sccrop.Padding(superior=margins[0], inferior=margins[1], left=margins[2], right=margins[3],
                                 anterior=margins[4], posterior=margins[5])
        ours_padded = sccrop.padded(box, padding, zooms, shape)
        theirs_padded = theirs.pad(margins[2], margins[3], margins[4], margins[5], margins[0], margins[1], zooms, shape)
        assert dataclasses_tuple(ours_padded) == dataclasses.astuple(theirs_padded)
        codes = [rng.permutation(3), rng.integers(0, 2, size=3)]
        ornt = np.array([[axis, 1 if keep else -1] for axis, keep in zip(*codes)], float)
        back, _ = theirs_padded.reorient(shape, nib.orientations.axcodes2ornt(("L", "A", "S")), ornt)
        assert sccrop.original_faces(ours_padded, shape, ornt) == {
            "xmin": back.rl1, "xmax": back.rl2 - 1, "ymin": back.ap1, "ymax": back.ap2 - 1, "zmin": back.z1, "zmax": back.z2 - 1}


def dataclasses_tuple(box: sccrop.LasBox) -> tuple[int, ...]:
    return dataclasses.astuple(box)


def test_no_detection_and_bad_metadata_are_refused() -> None:
    with pytest.raises(ValueError, match="no spinal cord detected"):
        sccrop.las_box({}, (10, 10, 10), 0.1)
    good = {key: 10 for key in sccrop.PAD_KEYS}
    assert sccrop.Padding.from_metadata(good).posterior == 10.0
    for key, value in itertools.product(sccrop.PAD_KEYS[:2], (None, "5", -1, True, float("nan"))):
        bad = {**good, key: value}
        if value is None:
            del bad[key]
        with pytest.raises(ValueError, match=f"model/crop_metadata.json: {key} must be a non-negative number of mm"):
            sccrop.Padding.from_metadata(bad, source="model/crop_metadata.json")


def bright_box(slice_: np.ndarray) -> tuple[float, float, float, float] | None:
    """A stand-in detector, deterministic in the slice's pixels: a box of 6 x 4 mm around the
    middle channel's brightest pixel, normalised (cx, cy, w, h); None for a dark slice (so some
    slices have no detection)."""
    plane = slice_[..., 1]
    if plane.mean() < 10:
        return None
    y, x = np.unravel_index(int(np.argmax(plane)), plane.shape)
    h, w = plane.shape
    return ((x + 0.5) / w, (y + 0.5) / h, 6 / w, 4 / h)


def cordness(slice_: np.ndarray) -> float:
    """A stand-in classifier: the middle channel's mean brightness, 0-1."""
    return float(slice_[..., 1].mean()) / 255 * 4


@pytest.mark.realdata
@pytest.mark.parametrize("name", IMAGES)
def test_the_whole_box_equals_sc_crop_detect_with_the_same_networks(name: str, shared: Path, oracle,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """sc_crop.detect itself, its two networks replaced by the stand-ins above (its YOLO call
    `infer_slices`, its classifier session and letterbox), against `cord_box` with the same
    stand-ins: the same inclusive faces, for SCT 7's margins from a crop_metadata.json."""
    import importlib
    import sys
    import types

    import onnxruntime

    download = importlib.import_module("sc_crop.download")  # the module, not the package's function

    def infer_slices(model, slices, las_idxs, conf, device, imgsz):
        return {z: box for z, box in zip(las_idxs, map(bright_box, slices)) if box is not None}

    class Session:
        def __init__(self, *args, **kwargs):
            pass

        def run(self, _outputs, feeds):
            p = min(1.0, cordness(feeds["images"]))
            return [np.array([[1 - p, p]])]

    monkeypatch.setitem(sys.modules, "ultralytics", types.SimpleNamespace(YOLO=lambda *a, **k: None))
    monkeypatch.setattr(download, "ensure_model", lambda: Path("det_model.onnx"))
    monkeypatch.setattr(download, "ensure_cls_model", lambda: Path("cls_model.onnx"))
    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    monkeypatch.setattr(oracle, "infer_slices", infer_slices)
    monkeypatch.setattr(oracle, "_letterbox_cls", lambda sl, imgsz: sl)
    # small margins, a different one per face: the box stays inside these small images, and a face
    # padded with another face's margin shows
    metadata = {"pad_superior": 4, "pad_inferior": 13, "pad_left": 2, "pad_right": 3.5, "pad_anterior": 1, "pad_posterior": 5}
    img = load(name)
    theirs = oracle.detect(img, **metadata)
    ours = sccrop.cord_box(np.asanyarray(img.dataobj), img.affine, img.header.get_zooms(),
                           padding=sccrop.Padding.from_metadata(metadata),
                           detect=lambda slices: [bright_box(s) for s in slices],
                           cord_probability=lambda s: min(1.0, cordness(s)))
    assert ours == {face: theirs[face] for face in ("xmin", "xmax", "ymin", "ymax", "zmin", "zmax")}


@pytest.mark.realdata
@pytest.mark.parametrize("name", IMAGES)
def test_classifier_input_equals_the_package(name: str, shared: Path, oracle) -> None:
    """Every slice of the real images, and odd shapes (taller, wider, larger than 320, square)."""
    pytest.importorskip("cv2", reason="OpenCV (a dependency of lesionseg) not installed")
    img = load(name)
    volume = sccrop.detection_volume(np.asanyarray(img.dataobj), img.affine, img.header.get_zooms()).volume
    slices, _ = sccrop.slab_slices(volume)
    rng = np.random.default_rng(3)
    odd = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in ((17, 400), (401, 33), (320, 320), (7, 7))]
    for slice_ in [*slices, *odd]:
        ours = sccrop.classifier_input(slice_)
        theirs = oracle._letterbox_cls(slice_, 320)
        assert ours.dtype == theirs.dtype == np.float32 and ours.shape == (1, 3, 320, 320)
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.realdata
@pytest.mark.parametrize("name", IMAGES)
def test_detector_input_equals_the_predictors(name: str, shared: Path) -> None:
    """Against ultralytics' own LetterBox with the arguments its predictor gives it for sc-crop's
    dynamic ONNX detector (imgsz 320, auto, stride 32), then the predictor's BGR-to-RGB flip and
    division by 255 (ultralytics/engine/predictor.py, preprocess and pre_transform)."""
    pytest.importorskip("ultralytics", reason="ultralytics (the oracle) not installed: pip install --no-deps ultralytics==8.4.190")
    from ultralytics.data.augment import LetterBox

    img = load(name)
    volume = sccrop.detection_volume(np.asanyarray(img.dataobj), img.affine, img.header.get_zooms()).volume
    slices, _ = sccrop.slab_slices(volume)
    rng = np.random.default_rng(5)
    odd = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in ((17, 400), (401, 33), (320, 320), (7, 7), (1, 900))]
    letterbox = LetterBox(320, auto=True, stride=32)
    for slice_ in [*slices, *odd]:
        framed = letterbox(image=slice_)
        theirs = framed[..., ::-1].transpose(2, 0, 1)[np.newaxis].astype(np.float32) / 255
        ours = sccrop.detector_input(slice_)
        assert ours.shape == theirs.shape and ours.dtype == np.float32, (ours.shape, theirs.shape)
        assert ours.shape[2] % 32 == 0 and ours.shape[3] % 32 == 0 and max(ours.shape[2:]) == 320
        np.testing.assert_array_equal(ours, theirs)


def test_best_detection_equals_ultralytics_reading_of_the_output() -> None:
    """Random end-to-end outputs for real-sized slices, read by ultralytics 8.4.190's own code (its
    end-to-end filter, scale_boxes, Boxes.xywhn) and the best-box choice of sc-crop's infer_slices."""
    pytest.importorskip("ultralytics", reason="ultralytics (the oracle) not installed: pip install --no-deps ultralytics==8.4.190")
    import torch
    from ultralytics.engine.results import Boxes
    from ultralytics.utils import nms, ops

    rng = np.random.default_rng(11)
    shapes = [(54, 49), (166, 161), (80, 24), (60, 52), (17, 400), (401, 33), (320, 320), (7, 7)]
    for trial in range(400):
        h, w = shapes[trial % len(shapes)]
        input_shape = sccrop.detector_input(np.zeros((h, w, 3), np.uint8)).shape[2:]
        output = np.zeros((300, 6), np.float32)
        n = int(rng.integers(0, 300))
        corners = rng.uniform(-20, max(input_shape) + 20, size=(n, 4)).astype(np.float32)
        output[:n, 0], output[:n, 2] = np.minimum(corners[:, 0], corners[:, 2]), np.maximum(corners[:, 0], corners[:, 2])
        output[:n, 1], output[:n, 3] = np.minimum(corners[:, 1], corners[:, 3]), np.maximum(corners[:, 1], corners[:, 3])
        output[:n, 4] = rng.choice([rng.uniform(0, 0.2), rng.uniform(0, 1)], size=n).astype(np.float32)
        if n > 2 and trial % 5 == 0:
            output[1, 4] = output[2, 4] = output[:n, 4].max()  # a tie: the first wins
        if n > 2 and trial % 7 == 0:  # at the threshold exactly (as float32): not above it
            output[:n, 4] = np.minimum(output[:n, 4], np.float32(0.05))
            output[0, 4] = np.float32(sccrop.DETECTION_CONFIDENCE)
        (pred,) = nms.non_max_suppression(torch.from_numpy(output[None].copy()), conf_thres=0.1, iou_thres=0.7, end2end=True)
        pred[:, :4] = ops.scale_boxes(tuple(input_shape), pred[:, :4], (h, w, 3))
        boxes = Boxes(pred[:, :6], (h, w))
        theirs = None if len(boxes) == 0 else tuple(boxes.xywhn[int(boxes.conf.argmax())].tolist())
        assert sccrop.best_detection(output, input_shape, (h, w)) == theirs, (trial, h, w)
