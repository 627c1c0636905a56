"""Per-subject files of a batch (`-file_centerline` patterns): placeholders, the BIDS derivatives
layout, and the errors naming the subject whose file is missing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionseg.client.batch.inputs import collect_inputs
from lesionseg.client.subject_files import BIDS_LABELS, check_pattern, is_pattern, subject_file
from lesionseg.client.cli import main
from lesionseg.core.errors import InputError, UsageError


def nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), str(path))
    return path


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    """sub-01 (with a session) and sub-02; only sub-01 has a cord segmentation in derivatives/labels."""
    root = tmp_path / "bids"
    root.mkdir()
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.8.0"}')
    nifti(root / "sub-01" / "ses-M0" / "anat" / "sub-01_ses-M0_T2star.nii.gz")
    nifti(root / "sub-02" / "anat" / "sub-02_T2star.nii.gz")
    nifti(root / "derivatives" / "labels" / "sub-01" / "ses-M0" / "anat" / "sub-01_ses-M0_T2star_seg.nii.gz")
    return root


def test_bids_shorthand_names_the_derivatives_labels_file(bids: Path) -> None:
    images = {image.path.name: image for image in collect_inputs([bids])}
    first, second = images["sub-01_ses-M0_T2star.nii.gz"], images["sub-02_T2star.nii.gz"]
    assert subject_file("bids", first.path, first.dataset, what="centerline") == \
        bids / "derivatives" / "labels" / "sub-01" / "ses-M0" / "anat" / "sub-01_ses-M0_T2star_seg.nii.gz"
    with pytest.raises(InputError) as missing:
        subject_file("bids", second.path, second.dataset, what="centerline")
    message = str(missing.value)
    assert message.startswith("sub-02/anat/sub-02_T2star.nii.gz: centerline file ")
    assert str(bids / "derivatives" / "labels" / "sub-02" / "anat" / "sub-02_T2star_seg.nii.gz") in message
    assert "does not exist" in message and "\n" not in message


def test_folder_and_stem_placeholders(tmp_path: Path) -> None:
    image = nifti(tmp_path / "cohort" / "p1" / "t2s.nii.gz")
    cord = nifti(tmp_path / "cohort" / "p1" / "t2s_seg.nii.gz")
    (found,) = collect_inputs([str(tmp_path / "cohort" / "*" / "t2s.nii.gz")])
    assert found.path == image
    assert subject_file("{folder}/{stem}_seg.nii.gz", found.path, found.dataset, what="centerline") == cord
    other = tmp_path / "cords" / "t2s.nii.gz"
    nifti(other)
    assert subject_file(str(tmp_path / "cords" / "{stem}.nii.gz"), found.path, found.dataset, what="centerline") == other


def test_an_explicit_image_finds_its_bids_dataset_by_walking_up(bids: Path) -> None:
    image = bids / "sub-01" / "ses-M0" / "anat" / "sub-01_ses-M0_T2star.nii.gz"
    assert subject_file("bids", image, None, what="centerline").name == "sub-01_ses-M0_T2star_seg.nii.gz"


def test_dataset_placeholders_need_a_dataset(tmp_path: Path) -> None:
    image = nifti(tmp_path / "lone" / "t2s.nii.gz")
    with pytest.raises(InputError, match=r"lone/t2s.nii.gz: its centerline pattern 'bids' needs the image's dataset"):
        subject_file("bids", image, None, what="centerline")


def test_patterns_are_checked() -> None:
    assert check_pattern("bids", option="-file_centerline") == BIDS_LABELS
    assert is_pattern("bids") and is_pattern("{folder}/x.nii.gz") and not is_pattern("cord.nii.gz")
    with pytest.raises(UsageError, match=r"unknown placeholder \{subject\}"):
        check_pattern("{subject}_seg.nii.gz", option="-file_centerline")
    with pytest.raises(UsageError, match="-file_centerline"):
        check_pattern("{folder", option="-file_centerline")


def test_batch_refuses_one_centerline_file_for_many_images(bids: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cord = bids / "derivatives" / "labels" / "sub-01" / "ses-M0" / "anat" / "sub-01_ses-M0_T2star_seg.nii.gz"
    code = main(["deepseg-lesion", "-i", str(bids), "-c", "t2s", "-centerline", "file", "-file_centerline", str(cord)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lesionseg: error: -file_centerline names one file, which belongs to one image: in a batch give a "
                   "pattern such as '{folder}/{stem}_seg.nii.gz' or 'bids' (see --help)"]
    assert main(["deepseg-lesion", "-i", str(bids), "-c", "t2s", "-centerline", "file", "-file_centerline", "{sub}.nii.gz"]) == 2
    assert "unknown placeholder {sub}" in capsys.readouterr().err
