"""`lesionseg crop` against sct_crop_image's documented semantics (-m MASK -dilate AxBxC): the
mask's bounding box per array axis, widened per side, clipped to the image, affine shifted so
every kept voxel stays at the same world position."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionseg.client.cli import main

pytestmark = pytest.mark.realdata


def test_crop_around_the_manual_cord_mask(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "t2.nii.gz"
    image.symlink_to(shared / "sct_testing_data" / "t2" / "t2.nii.gz")
    mask_path = shared / "sct_testing_data" / "t2" / "t2_seg-manual.nii.gz"
    assert main(["crop", "-i", str(image), "-m", str(mask_path), "-dilate", "3x2x100"]) == 0
    out = tmp_path / "t2_crop.nii.gz"
    assert capsys.readouterr().out.split() == [str(out)]
    source, mask, cropped = nib.load(image), np.asanyarray(nib.load(mask_path).dataobj) > 0, nib.load(out)
    expected = []
    for axis, widen in enumerate((3, 2, 100)):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        expected.append(slice(max(present[0] - widen, 0), min(present[-1] + 1 + widen, mask.shape[axis])))
    data = np.asanyarray(source.dataobj)[tuple(expected)]
    assert cropped.shape == data.shape and np.array_equal(np.asanyarray(cropped.dataobj), data)
    assert cropped.get_data_dtype() == source.get_data_dtype()
    corner = [s.start for s in expected]
    np.testing.assert_allclose(cropped.affine @ [0, 0, 0, 1], source.affine @ [*corner, 1], atol=1e-4)
    np.testing.assert_allclose(cropped.affine[:3, :3], source.affine[:3, :3], atol=1e-6)
    # mm dilation on 1 mm voxels is the same box; an existing output is kept unless --overwrite
    assert main(["crop", "-i", str(image), "-m", str(mask_path), "-dilate", "3x2x100", "-dilate-unit", "mm"]) == 2
    assert "output exists" in capsys.readouterr().err
    assert main(["crop", "-i", str(image), "-m", str(mask_path), "-dilate", "3x2x100", "-dilate-unit", "mm", "--overwrite"]) == 0
    assert nib.load(out).shape == data.shape


def test_crop_refuses_bad_input(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = shared / "sct_testing_data" / "t2" / "t2.nii.gz"
    other = shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"
    assert main(["crop", "-i", str(image), "-m", str(other), "-o", str(tmp_path / "x.nii.gz")]) == 1
    assert "is not on the grid" in capsys.readouterr().err
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(nib.load(image).shape, np.uint8), nib.load(image).affine), empty)
    assert main(["crop", "-i", str(image), "-m", str(empty), "-o", str(tmp_path / "x.nii.gz")]) == 1
    assert main(["crop", "-i", str(image), "-m", str(image), "-dilate", "3x2", "-o", str(tmp_path / "x.nii.gz")]) == 2
    assert not (tmp_path / "x.nii.gz").exists()
