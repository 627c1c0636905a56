"""Parity reports (`lesionseg.export.parity`): the parity bar applied to masks (on every image,
Dice >= 0.99 against the reference, the same lesion count, total lesion volume within 2 %), and
the one-line failure an export will refuse a precision with."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.export.parity import ImageParity, ParityBar, ParityReport, compare_masks, lesion_count


def masks() -> np.ndarray:
    """Two lesions: a 5x5x4 block and a 3x3x3 cube, apart."""
    mask = np.zeros((30, 30, 12), np.uint8)
    mask[2:7, 2:7, 2:6] = 1
    mask[20:23, 20:23, 5:8] = 1
    return mask


def test_identical_masks_pass() -> None:
    parity = compare_masks("a.nii.gz", masks(), masks(), voxel_mm3=0.5)
    assert (parity.dice, parity.lesions_reference, parity.lesions_candidate) == (1.0, 2, 2)
    assert parity.volume_reference_mm3 == parity.volume_candidate_mm3 == (100 + 27) * 0.5
    assert parity.failures(ParityBar()) == []


def test_each_part_of_the_bar_can_fail() -> None:
    reference = masks()
    shrunk = reference.copy()
    shrunk[2:7, 2:7, 5] = 0  # 25 of 127 voxels gone: Dice 0.89, volume -20 %
    split = reference.copy()
    split[2:7, 4, 2:6] = 0  # the block cut in two: 3 lesions
    diagonal = np.zeros_like(reference)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = 1  # corner neighbours: one 26-connected lesion
    assert lesion_count(diagonal) == 1
    failures = compare_masks("s", reference, shrunk, voxel_mm3=1).failures(ParityBar())
    assert failures[0].startswith("Dice 0.8") and "volume 102.0 vs 127.0 mm3 (19.7% > 2%)" in failures[-1]
    assert "3 lesions, FP32 2" in compare_masks("c", reference, split, voxel_mm3=1).failures(ParityBar())
    appeared = compare_masks("e", np.zeros_like(reference), diagonal, voxel_mm3=1)
    assert appeared.volume_change == float("inf") and len(appeared.failures(ParityBar())) == 3
    assert compare_masks("z", np.zeros_like(reference), np.zeros_like(reference), voxel_mm3=1).failures(ParityBar()) == []
    with pytest.raises(ValueError, match="cannot be compared"):
        compare_masks("x", reference, reference[:-1], voxel_mm3=1)


def test_report_round_trip_and_failure_line() -> None:
    good = ImageParity(image="t2s.nii.gz", dice=1.0, lesions_reference=2, lesions_candidate=2,
                       volume_reference_mm3=12.0, volume_candidate_mm3=12.0)
    bad = ImageParity(image="t2_fake_lesion.nii.gz", dice=0.981, lesions_reference=11, lesions_candidate=11,
                      volume_reference_mm3=406.0, volume_candidate_mm3=420.0)
    report = ParityReport(precision="bf16", runtime="openvino", reference="onnxruntime fp32", images=[good, bad],
                          notes=("calibration on the same images",))
    assert not report.passed
    line = report.failure_line()
    assert "\n" not in line
    assert line == ("bf16 fails its parity against FP32 on 1 of 2 images: t2_fake_lesion.nii.gz: Dice 0.9810 < 0.99, "
                    "volume 420.0 vs 406.0 mm3 (3.4% > 2%)")
    again = ParityReport.from_json(report.to_json())
    assert again == report and '"passed": false' in report.to_json()
    passing = ParityReport(precision="bf16", runtime="openvino", reference="onnxruntime fp32", images=[good])
    assert passing.passed and passing.failure_line() == ""
    assert not ParityReport(precision="bf16", runtime="openvino", reference="onnxruntime fp32", images=[]).passed
