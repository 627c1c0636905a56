"""SCT 7's crop box (sc-crop's box, `sct_deepseg -box-*`, the `_cropbox` file, the truncation
check) against the sc-crop package itself (PyPI `sc-crop` 0.12.1, installed without its detector
dependencies: crop, uncrop, save_bbox_nifti and check_seg_truncation need none), on every real
image of ../shared/sct_testing_data with random boxes. Tolerance: none for voxels, faces and
files; the cropped affine within 1e-9 mm (the same product, summed in another order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

from lesionseg.client.crop import FACES, Box, box_mask, box_of_faces, cropped_affine, faces_of, touching_faces, truncation_warning, uncrop, with_faces
from lesionseg.core.errors import UsageError
from lesionseg.core.nibabel_import import nibabel as nib

IMAGES = ["t1/t1w.nii.gz", "t2/t2.nii.gz", "t2/t2_fake_lesion.nii.gz", "t2s/t2s.nii.gz", "t2s/t2s_uncropped.nii.gz"]


def sc_crop():
    return pytest.importorskip("sc_crop", reason="sc-crop (the oracle) not installed: pip install --no-deps sc-crop==0.12.1")


def random_box(rng: np.random.Generator, shape) -> Box:
    start, stop = [], []
    for n in shape[:3]:
        a, b = sorted(int(v) for v in rng.integers(0, n, size=2))
        start.append(a)
        stop.append(b + 1)
    return Box(start=tuple(start), stop=tuple(stop))


@pytest.mark.realdata
@pytest.mark.parametrize("name", IMAGES)
def test_crop_uncrop_cropbox_and_truncation_equal_sc_crop(name: str, shared: Path, tmp_path: Path) -> None:
    oracle = sc_crop()
    img = nib.load(str(SHARED / "sct_testing_data" / name))
    data = np.asanyarray(img.dataobj)
    shape = data.shape[:3]
    rng = np.random.default_rng(sum(map(ord, name)))
    for trial in range(8):
        box = random_box(rng, shape)
        bbox = {**faces_of(box), "_original_img": img}
        # the cropped image: voxels and world position
        theirs = oracle.crop(img, bbox)
        np.testing.assert_array_equal(data[box.slices], np.asanyarray(theirs.dataobj))
        np.testing.assert_allclose(cropped_affine(img.affine, box), theirs.affine, rtol=0, atol=1e-9)  # mm; summed in another order
        # the _cropbox file's volume
        oracle.save_bbox_nifti(bbox, img, tmp_path / f"cropbox{trial}.nii.gz")
        np.testing.assert_array_equal(box_mask(shape, box), np.asanyarray(nib.load(str(tmp_path / f"cropbox{trial}.nii.gz")).dataobj))
        # a segmentation of the crop pasted back, and the faces it reaches
        seg = (rng.random(box.shape) < rng.choice([0.0005, 0.01, 0.3])).astype(np.uint8)
        full = uncrop(seg, box, shape)
        np.testing.assert_array_equal(full, np.asanyarray(oracle.uncrop(nib.Nifti1Image(seg, theirs.affine), bbox).dataobj))
        expected = oracle.check_seg_truncation(nib.Nifti1Image(full, img.affine), bbox)
        assert touching_faces(full, box) == expected, (name, trial, faces_of(box))


def test_touching_faces_in_sct_order_and_never_the_image_border() -> None:
    shape = (10, 12, 14)
    box = Box(start=(2, 3, 4), stop=(8, 9, 10))
    full = np.zeros(shape, np.uint8)
    full[2, 5, 5] = full[7, 5, 5] = full[5, 5, 9] = 1  # xmin, xmax, zmax
    assert touching_faces(full, box) == ["xmax", "xmin", "zmax"]
    whole = Box(start=(0, 0, 0), stop=shape)
    assert touching_faces(np.ones(shape, np.uint8), whole) == []  # the image's own border is no truncation
    assert "-box-xmax <value>  -box-xmin <value>" in truncation_warning(["xmax", "xmin"], "/x/t2_cropbox.nii.gz")


def test_faces_round_trip_and_overrides() -> None:
    shape = (10, 12, 14)
    box = Box(start=(2, 3, 4), stop=(8, 9, 10))
    assert faces_of(box) == {"xmin": 2, "xmax": 7, "ymin": 3, "ymax": 8, "zmin": 4, "zmax": 9}
    assert box_of_faces(faces_of(box), shape) == box
    assert with_faces(box, {"zmax": 13, "xmin": None}, shape) == Box(start=(2, 3, 4), stop=(8, 9, 14))
    assert with_faces(None, {"ymin": 5}, shape) == Box(start=(0, 5, 0), stop=shape)
    assert set(FACES) == set(faces_of(box))
    with pytest.raises(UsageError, match="unknown crop-box face"):
        with_faces(box, {"xmn": 3}, shape)


@pytest.mark.parametrize(("faces", "message"), [
    ({"xmin": 0, "xmax": 9, "ymin": 0, "ymax": 11, "zmin": 0}, "crop box without -box-zmax"),
    ({"xmin": 0, "xmax": 10, "ymin": 0, "ymax": 11, "zmin": 0, "zmax": 13}, "-box-xmax 10: outside the image (0 to 9 along x)"),
    ({"xmin": 0, "xmax": 9, "ymin": -1, "ymax": 11, "zmin": 0, "zmax": 13}, "-box-ymin -1: outside the image"),
    ({"xmin": 0, "xmax": 9, "ymin": 0, "ymax": 11, "zmin": 6, "zmax": 5}, "-box-zmin 6 is above -box-zmax 5: the box is inverted"),
])
def test_bad_faces_are_usage_errors_naming_the_option(faces: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        box_of_faces(faces, (10, 12, 14))
