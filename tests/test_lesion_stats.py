"""Lesion statistics on synthetic masks whose answers are worked out by hand, and the sidecar files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lesionseg.client.lesion_stats import TSV_COLUMNS, lesion_stats, sidecar_paths, write_sidecars
from lesionseg.core.lesions import label_lesions


def two_cubes() -> np.ndarray:
    """A 2x2x2 cube at x,y,z in [1, 3) and a 3x3x3 cube at [10, 13): 8 and 27 voxels."""
    mask = np.zeros((20, 16, 14), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    mask[10:13, 10:13, 10:13] = 1
    return mask


def test_two_cubes_with_anisotropic_spacing() -> None:
    spacing = (0.5, 1.0, 2.0)  # one voxel = 1 mm3
    stats = lesion_stats(two_cubes(), spacing)
    assert stats.count == 2 and stats.total_voxels == 35
    assert stats.total_volume_mm3 == pytest.approx(35.0)
    small, big = stats.lesions  # numbered in C order of the first voxel: the cube at 1 comes first
    assert (small.label, small.voxels, big.label, big.voxels) == (1, 8, 2, 27)
    assert small.volume_mm3 == pytest.approx(8.0) and big.volume_mm3 == pytest.approx(27.0)
    assert small.extent_mm == pytest.approx((1.0, 2.0, 4.0))  # 2 voxels x (0.5, 1, 2) mm
    assert big.extent_mm == pytest.approx((1.5, 3.0, 6.0))
    assert small.centroid_vox == pytest.approx((1.5, 1.5, 1.5))
    assert big.centroid_vox == pytest.approx((11.0, 11.0, 11.0))


def test_volume_uses_the_spacing_of_each_axis() -> None:
    mask = np.zeros((5, 5, 5), np.uint8)
    mask[0, 0, 0:4] = 1  # a rod of 4 voxels along z
    stats = lesion_stats(mask, (0.8, 0.8, 3.0))
    (rod,) = stats.lesions
    assert rod.volume_mm3 == pytest.approx(4 * 0.8 * 0.8 * 3.0)
    assert rod.extent_mm == pytest.approx((0.8, 0.8, 12.0))
    assert rod.centroid_vox == pytest.approx((0.0, 0.0, 1.5))


@pytest.mark.parametrize("offset", [(1, 0, 0), (1, 1, 0), (1, 1, 1), (0, 1, 1)])
def test_voxels_touching_by_face_edge_or_corner_are_one_lesion(offset: tuple[int, int, int]) -> None:
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1, 1, 1] = 1
    mask[1 + offset[0], 1 + offset[1], 1 + offset[2]] = 1
    labels, count = label_lesions(mask)
    assert count == 1 and labels.max() == 1
    assert lesion_stats(mask, (1, 1, 1)).lesions[0].voxels == 2


def test_voxels_two_apart_are_two_lesions() -> None:
    mask = np.zeros((5, 5, 5), np.uint8)
    mask[0, 0, 0] = 1
    mask[2, 2, 2] = 1  # diagonal, one empty voxel between: not 26-connected
    stats = lesion_stats(mask, (1, 1, 1))
    assert stats.count == 2 and [lesion.voxels for lesion in stats.lesions] == [1, 1]


@pytest.mark.parametrize("density", [0.0, 0.001, 0.02, 0.1, 0.3, 0.6])
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 1, 5), (23, 17, 11), (40, 40, 12)])
def test_labels_and_statistics_equal_scipy_ndimage(shape: tuple[int, int, int], density: float) -> None:
    """The oracle: scipy.ndimage's 26-connected labelling, center_of_mass and find_objects, on
    random masks from empty to dense (mostly one lesion): the same labels, and statistics equal to
    the last bit."""
    from scipy import ndimage

    rng = np.random.default_rng(int(density * 1000) + sum(shape))
    mask = (rng.random(shape) < density).astype(np.uint8)
    expected, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    labels, found = label_lesions(mask)
    assert found == count and labels.dtype == np.int32
    np.testing.assert_array_equal(labels, expected)
    stats = lesion_stats(mask, (0.7, 0.9, 2.5))
    index = np.arange(1, count + 1)
    centroids = ndimage.center_of_mass(np.ones(shape, np.float64), expected, index) if count else []
    boxes = ndimage.find_objects(expected)
    assert [lesion.voxels for lesion in stats.lesions] == np.bincount(expected.ravel(), minlength=count + 1)[1:].tolist()
    assert [lesion.centroid_vox for lesion in stats.lesions] == [tuple(float(c) for c in centroid) for centroid in centroids]
    assert [lesion.extent_mm for lesion in stats.lesions] == [
        tuple((box.stop - box.start) * s for box, s in zip(box3, (0.7, 0.9, 2.5))) for box3 in boxes]


def test_label_values_are_merged_and_relabelled() -> None:
    mask = two_cubes().astype(np.int16)
    mask[1:3, 1:3, 1] = 5  # one lesion holding two label values stays one lesion
    mask[10:13, 10:13, 10:13] = 2
    stats = lesion_stats(mask, (1, 1, 1))
    assert [lesion.voxels for lesion in stats.lesions] == [8, 27]


def test_empty_mask() -> None:
    stats = lesion_stats(np.zeros((3, 4, 5), np.uint8), (1.0, 1.0, 1.0))
    assert stats.count == 0 and stats.lesions == () and stats.total_volume_mm3 == 0.0
    assert stats.to_dict()["per_lesion"] == [] and stats.to_dict()["count"] == 0


def test_bad_spacing_and_shape_are_refused() -> None:
    with pytest.raises(ValueError):
        lesion_stats(two_cubes(), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError):
        lesion_stats(np.ones((3, 3), np.uint8), (1.0, 1.0, 1.0))


def test_sidecar_names_follow_the_mask_stem(tmp_path: Path) -> None:
    assert sidecar_paths(tmp_path / "sub-01_T2w_lesion.nii.gz") == (
        tmp_path / "sub-01_T2w_lesion_lesions.tsv", tmp_path / "sub-01_T2w_lesion_lesions.json")
    assert sidecar_paths(Path("/a/seg.nii"), tmp_path) == (tmp_path / "seg_lesions.tsv", tmp_path / "seg_lesions.json")


def test_sidecar_files_content(tmp_path: Path) -> None:
    mask_path = tmp_path / "masks" / "sub-01_lesion.nii.gz"
    stats = lesion_stats(two_cubes(), (0.5, 1.0, 2.0), axis_codes=("L", "A", "S"))
    tsv, js = write_sidecars(stats, mask_path, tmp_path / "out")
    assert (tsv.name, js.name) == ("sub-01_lesion_lesions.tsv", "sub-01_lesion_lesions.json")
    rows = [line.split("\t") for line in tsv.read_text().splitlines()]
    assert tuple(rows[0]) == TSV_COLUMNS
    assert rows[1:] == [
        ["1", "8", "8.000", "1.000", "2.000", "4.000", "1.500", "1.500", "1.500"],
        ["2", "27", "27.000", "1.500", "3.000", "6.000", "11.000", "11.000", "11.000"],
    ]
    record = json.loads(js.read_text())
    assert record["mask"] == str(mask_path.resolve())
    assert record["count"] == 2 and record["total_volume_mm3"] == pytest.approx(35.0)
    assert record["connectivity"] == 26 and record["spacing_mm"] == [0.5, 1.0, 2.0]
    assert record["axis_codes"] == ["L", "A", "S"]
    assert [lesion["voxels"] for lesion in record["per_lesion"]] == [8, 27]
    assert record["per_lesion"][1]["extent_mm"] == pytest.approx([1.5, 3.0, 6.0])
    assert not [p for p in js.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_empty_mask_sidecars_have_a_header_only(tmp_path: Path) -> None:
    tsv, js = write_sidecars(lesion_stats(np.zeros((2, 2, 2), np.uint8), (1, 1, 1)), tmp_path / "m.nii")
    assert tsv.read_text() == "\t".join(TSV_COLUMNS) + "\n"
    assert json.loads(js.read_text())["per_lesion"] == []


# --- `lesionseg qc`: statistics into the entry, orientation of the views, bad inputs ---------------
# A synthetic volume stored with file axes toward (P, S, R): the QC views must come out in SCT's
# conventions whatever the file orientation, so the expected pixel positions are worked out from
# the anatomy, not from our reorientation code.

NX, NY, NZ = 20, 30, 40  # RPI voxel counts: x toward left, y toward anterior, z toward superior, 1 mm
PSR_AFFINE = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)  # file (i, j, k) -> RAS mm


def rpi_to_psr_file(rpi: np.ndarray) -> np.ndarray:
    """file[i, j, k] = rpi[NX-1-k, NY-1-i, j]: file axis 0 toward P, 1 toward S, 2 toward R."""
    return np.ascontiguousarray(np.transpose(rpi[::-1, ::-1, :], (1, 2, 0)))


@pytest.fixture()
def psr_case(tmp_path: Path) -> dict[str, Path]:
    """Image, cord (x=10, y=15, every z) and two lesions: A right-anterior (x 2-4, y 22-25, z 30-35),
    B mid-cord anterior-superior (x 8-12, y 24-27, z 33-36), all in RPI voxel indices."""
    import nibabel as nib

    image = np.full((NX, NY, NZ), 20.0, np.float32)
    cord = np.zeros((NX, NY, NZ), np.uint8)
    cord[8:13, 13:18, :] = 1
    image[cord > 0] = 60.0
    lesion = np.zeros((NX, NY, NZ), np.uint8)
    lesion[2:5, 22:26, 30:36] = 1  # A: 3 x 4 x 6 = 72 voxels
    lesion[8:13, 24:28, 33:37] = 1  # B: 5 x 4 x 4 = 80 voxels
    paths = {}
    for name, data in (("img", image), ("cord", cord), ("lesion", lesion)):
        paths[name] = tmp_path / "ds" / "sub-09" / "anat" / f"sub-09_{name}.nii.gz"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(rpi_to_psr_file(data), PSR_AFFINE), str(paths[name]))
    return paths


def _qc(case: dict[str, Path], qc_dir: Path, *extra: str) -> int:
    from lesionseg.client.cli import main

    return main(["qc", "-i", str(case["img"]), "-s", str(case["cord"]), "-l", str(case["lesion"]), "-qc", str(qc_dir), *extra])


def _entry(qc_dir: Path) -> tuple[dict, np.ndarray]:
    """The only entry's JSON and its overlay as (rows, cols, 4)."""
    from test_qc import decode_png

    (record,) = [json.loads(p.read_text()) for p in (qc_dir / "_json").glob("qc_*.json")]
    width, height, colour, raw = decode_png((qc_dir / record["overlay_img"]).read_bytes())
    assert colour == 6  # RGBA, rows unfiltered (our writer)
    return record, np.frombuffer(raw, np.uint8).reshape(height, 1 + 4 * width)[:, 1:].reshape(height, width, 4)


def _red(overlay: np.ndarray) -> np.ndarray:
    return np.argwhere((overlay[..., 0] == 255) & (overlay[..., 1] == 0) & (overlay[..., 3] == 255))


def test_qc_command_records_lesion_statistics(psr_case: dict[str, Path], tmp_path: Path) -> None:
    assert _qc(psr_case, tmp_path / "qc") == 0
    record, _ = _entry(tmp_path / "qc")
    assert (record["dataset"], record["subject"], record["command"], record["plane"]) == ("ds", "sub-09", "qc", "Axial")
    assert record["slices_rpi"] == [0, NZ]  # every slice holds cord
    lesions = record["lesions"]
    assert lesions["count"] == 2 and lesions["total_volume_mm3"] == pytest.approx(152.0)
    assert lesions["axis_codes"] == ["P", "S", "R"] and lesions["mask"] == str(psr_case["lesion"].resolve())
    # numbered in the file's C order: B reaches further posterior (file axis 0 = NY-1-y), so B is first
    b, a = lesions["per_lesion"]
    assert (b["voxels"], a["voxels"]) == (80, 72)
    assert a["extent_mm"] == pytest.approx([4, 6, 3]) and b["extent_mm"] == pytest.approx([4, 4, 5])  # file axes P, S, R
    assert a["centroid_vox"] == pytest.approx([NY - 1 - 23.5, 32.5, NX - 1 - 3])
    tsv = tmp_path / "qc" / record["attachments"]["sub-09_lesion_lesions.tsv"]
    assert [line.split("\t")[:3] for line in tsv.read_text().splitlines()[1:]] == [["1", "80", "80.000"], ["2", "72", "72.000"]]
    assert not any(p.name.endswith(("_lesions.tsv", "_lesions.json")) for p in psr_case["lesion"].parent.iterdir())


def test_qc_axial_view_is_radiological_with_anterior_up(psr_case: dict[str, Path], tmp_path: Path) -> None:
    assert _qc(psr_case, tmp_path / "qc") == 0
    _, overlay = _entry(tmp_path / "qc")
    tile = 72  # 36 mm at 0.5 mm per pixel
    assert overlay.shape[:2] == (4 * tile, 10 * tile)  # 40 slices with cord, inferior first
    row, col = divmod(31, 10)  # slice 31 holds lesion A only
    window = overlay[row * tile : (row + 1) * tile, col * tile : (col + 1) * tile]
    cyan = np.argwhere(window[..., 2] == 255)
    assert abs(cyan[:, 0].mean() - tile / 2) < 3 and abs(cyan[:, 1].mean() - tile / 2) < 3  # cord centred
    red = _red(window)
    # A is 7 mm to the patient's right of the cord (shown on the left) and 8.5 mm anterior (up)
    assert red[:, 1].mean() == pytest.approx(tile / 2 - 14, abs=2) and red[:, 0].mean() == pytest.approx(tile / 2 - 17, abs=2)


def test_qc_sagittal_view_has_superior_up_and_anterior_left(psr_case: dict[str, Path], tmp_path: Path) -> None:
    assert _qc(psr_case, tmp_path / "qc", "-p", "sagittal") == 0
    record, overlay = _entry(tmp_path / "qc")
    assert record["plane"] == "Sagittal"
    rows, cols = 2 * NZ, 2 * NY  # 0.5 mm per pixel
    assert overlay.shape[:2] == (rows, 3 * cols + 2 * 4)
    for panel in range(3):  # planes at x = 8, 10, 12: all cross lesion B, none lesion A
        red = _red(overlay[:, panel * (cols + 4) : panel * (cols + 4) + cols])
        assert len(red)
        # B spans z 33..36 (rows counted from the superior edge) and y 24..27 (cols from the anterior edge)
        assert red[:, 0].min() == pytest.approx(2 * (NZ - 37), abs=1) and red[:, 0].max() == pytest.approx(2 * (NZ - 33) - 1, abs=1)
        assert red[:, 1].min() == pytest.approx(2 * (NY - 28), abs=1) and red[:, 1].max() == pytest.approx(2 * (NY - 24) - 1, abs=1)


def test_qc_command_bad_inputs_give_one_line_errors(psr_case: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    import nibabel as nib

    def error(code: int, *args: str) -> str:
        from lesionseg.client.cli import main

        assert main(["qc", *args]) == code
        message = capsys.readouterr().err.strip()
        assert message.startswith("lesionseg: error: ") and "\n" not in message and "Traceback" not in message
        return message

    img, cord = str(psr_case["img"]), str(psr_case["cord"])
    missing = str(tmp_path / "nope.nii.gz")
    assert missing in error(1, "-i", missing, "-s", cord, "-qc", str(tmp_path / "qc"))
    assert missing in error(1, "-i", img, "-s", cord, "-l", missing, "-qc", str(tmp_path / "qc"))
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), PSR_AFFINE), str(small))
    assert str(small) in error(1, "-i", img, "-s", str(small), "-qc", str(tmp_path / "qc"))
    shifted = tmp_path / "shifted.nii.gz"
    moved = PSR_AFFINE.copy()
    moved[0, 3] = 5.0
    nib.save(nib.Nifti1Image(rpi_to_psr_file(np.ones((NX, NY, NZ), np.uint8)), moved), str(shifted))
    assert "affine" in error(1, "-i", img, "-s", cord, "-l", str(shifted), "-qc", str(tmp_path / "qc"))
    assert "--subject" in error(2, "-i", img, "-s", cord, "-qc", str(tmp_path / "qc"), "--subject", "../x")
    assert not (tmp_path / "qc" / "_json").exists()  # nothing written by a failed run


def test_mask_sidecars_of_a_soft_mask(tmp_path: Path) -> None:
    """A soft (float, <= 1) mask such as an ensemble's vote fraction counts voxels >= 0.5."""
    import nibabel as nib

    from lesionseg.client.lesion_stats import file_mask, image_stats, write_sidecars
    from lesionseg.core.nifti import load_nifti

    data = np.zeros((10, 10, 10), np.float32)
    data[1:3, 1:3, 1:3] = 2 / 3  # one lesion of 8 voxels by majority
    data[6:8, 6:8, 6:8] = 1 / 3  # a minority vote: not a lesion
    data[5, 5, 5] = 1.0  # a single voxel lesion, not touching the others
    path = tmp_path / "soft_lesion_seg.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.5, 2.0, 1.0])), path)
    mask = load_nifti(path, what="lesion mask", allow_empty=True)
    stats = image_stats(file_mask(mask), mask)
    tsv, js = write_sidecars(stats, path)
    assert (tsv.name, js.name) == ("soft_lesion_seg_lesions.tsv", "soft_lesion_seg_lesions.json")
    assert stats.count == 2 and sorted(lesion.voxels for lesion in stats.lesions) == [1, 8]
    assert stats.total_volume_mm3 == pytest.approx(9 * 0.5 * 0.5 * 2.0)
    # the QC entry of the same soft mask counts the same lesions (one rule for both)
    from lesionseg.client.cli import main

    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    image, cord = tmp_path / "img.nii.gz", tmp_path / "cord.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).uniform(1, 2, data.shape).astype(np.float32), affine), image)
    cord_data = np.zeros(data.shape, np.uint8)
    cord_data[4:6, 4:6, :] = 1
    nib.save(nib.Nifti1Image(cord_data, affine), cord)
    assert main(["qc", "-i", str(image), "-s", str(cord), "-l", str(path), "-qc", str(tmp_path / "qc")]) == 0
    (entry,) = (tmp_path / "qc" / "_json").glob("qc_*.json")
    assert json.loads(entry.read_text())["lesions"]["count"] == stats.count == 2
