"""DICOM SEG and TID 1500 SR of masks on real series: valid (dciodvfy: no errors), decoded by
highdicom back to the same voxels, referencing every source instance, with the lesion numbers
of the statistics, and UIDs that a re-run reproduces."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_data import dciodvfy_errors, decode_segment, sr_numbers, write

from lesionseg.client.dicom.outputs import dicom_objects, dicom_paths
from lesionseg.client.dicom.results import Algorithm, save
from lesionseg.client.dicom.series import read_series
from lesionseg.client.lesion_stats import lesion_stats
from lesionseg.core.interface import ModelInfo

pytestmark = pytest.mark.realdata

needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy not installed (Debian: apt-get install dicom3tools)")


def _masks(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A lesion mask of three blobs (one touching the last slice) inside a cord box."""
    rng = np.random.default_rng(seed)
    lesion, cord = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    x, y, z = shape
    cord[x // 4: 3 * x // 4, y // 4: 3 * y // 4, :] = 1
    for k in range(3):
        cx, cy = rng.integers(x // 4 + 2, 3 * x // 4 - 3), rng.integers(y // 4 + 2, 3 * y // 4 - 3)
        cz = z - 1 if k == 0 else rng.integers(0, z)
        lesion[cx: cx + 2, cy: cy + 3, cz] = 1
    return lesion, cord


def model(name: str, parameters: dict[str, str]) -> ModelInfo:
    """A served model's information as its config would give it."""
    return ModelInfo.from_config({"name": name, "parameters": {k: {"string_value": v} for k, v in parameters.items()}})


def write_dicom(series, folder: Path, info: ModelInfo, where: Path, *, lesion, stats, cord=None, qc: bool = False) -> dict[str, Path]:
    """The SEG and SR (and with `qc` the capture) of masks on `series` (read from `folder`), saved in `where`."""
    from lesionseg.client.dicom.series import series_image

    objects = dicom_objects(series, info, lesion=lesion, stats=stats, cord=cord, image=series_image(series), capture=qc)
    return {key: save(objects[key], path) for key, path in dicom_paths(folder.name, info.name, where, qc=qc).items()}


@pytest.fixture(scope="module")
def folders(shared: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dicom")
    return {name: write(shared, name, root / name) for name in ("axial", "oblique", "multiframe", "jpeg2000")}


@needs_dciodvfy
@pytest.mark.parametrize("name", ["axial", "oblique", "multiframe", "jpeg2000"])
def test_seg_and_sr(folders, tmp_path, name):
    series = read_series(folders[name])
    lesion, cord = _masks(series.data.shape, seed=len(name))
    stats = lesion_stats(lesion, series.spacing)
    info = model("seg_ms_lesion", {"source": "test", "plan": "{}"})
    algorithm = Algorithm.of_model(info.name, info.parameters)
    paths = write_dicom(series, folders[name], info, tmp_path, lesion=lesion, stats=stats, cord=cord)
    for path in paths.values():
        assert dciodvfy_errors(path) == [], path
    assert np.array_equal(decode_segment(paths["seg"], series, "multiple sclerosis lesion"), lesion)
    assert np.array_equal(decode_segment(paths["seg"], series, "spinal cord"), cord)

    seg = pydicom.dcmread(str(paths["seg"]))
    assert seg.SegmentationType == "BINARY" and seg.FrameOfReferenceUID == series.first.FrameOfReferenceUID
    assert seg.StudyInstanceUID == series.first.StudyInstanceUID and seg.SeriesInstanceUID != series.series_uid
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in series.datasets}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    assert int(seg.NumberOfFrames) == 2 * len(series.frames)  # empty frames kept, one per slice and segment
    codes = {d.SegmentLabel: (d.SegmentedPropertyCategoryCodeSequence[0].CodeValue, d.SegmentedPropertyTypeCodeSequence[0].CodeValue)
             for d in seg.SegmentSequence}
    assert codes == {"multiple sclerosis lesion": ("49755003", "52988006"), "spinal cord": ("91723000", "2748008")}
    identification = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert identification.AlgorithmName == "seg_ms_lesion" and identification.AlgorithmVersion == algorithm.version

    numbers = sr_numbers(paths["sr"])
    assert numbers["count"] == stats.count == 3
    assert numbers["total_mm3"] == pytest.approx(stats.total_volume_mm3, rel=1e-9)
    assert numbers["lesions"] == {f"lesion {x.label}": pytest.approx(x.volume_mm3, rel=1e-9) for x in stats.lesions}
    assert numbers["cord_mm3"] == pytest.approx(cord.sum() * np.prod(series.spacing), rel=1e-9)


def test_uids_follow_series_and_model(folders, tmp_path):
    """The same model on the same series gives the same UIDs (a re-run replaces in the PACS); a
    changed model or another series gives new ones."""
    series = read_series(folders["axial"])
    lesion, cord = _masks(series.data.shape, seed=1)
    stats = lesion_stats(lesion, series.spacing)

    def uids(info: ModelInfo, where: Path) -> tuple[str, ...]:
        paths = write_dicom(series, folders["axial"], info, where, lesion=lesion, stats=stats)
        seg, sr = (pydicom.dcmread(str(paths[k])) for k in ("seg", "sr"))
        return seg.SOPInstanceUID, seg.SeriesInstanceUID, sr.SOPInstanceUID, sr.SeriesInstanceUID

    first = uids(model("seg_ms_lesion", {"source": "a"}), tmp_path / "1")
    assert uids(model("seg_ms_lesion", {"source": "a"}), tmp_path / "2") == first
    changed = uids(model("seg_ms_lesion", {"source": "b"}), tmp_path / "3")
    assert not set(changed) & set(first)
    assert len(set(first)) == 4


@needs_dciodvfy
def test_qc_capture(folders, tmp_path):
    """The optional Secondary Capture: valid, RGB, in the source's study, lesion pixels red."""
    series = read_series(folders["axial"])
    lesion, cord = _masks(series.data.shape, seed=3)
    paths = write_dicom(series, folders["axial"], model("seg_ms_lesion", {}), tmp_path, lesion=lesion,
                        stats=lesion_stats(lesion, series.spacing), cord=cord, qc=True)
    assert dciodvfy_errors(paths["qc"]) == []
    capture = pydicom.dcmread(str(paths["qc"]))
    assert capture.PhotometricInterpretation == "RGB" and capture.StudyInstanceUID == series.first.StudyInstanceUID
    rgb = capture.pixel_array
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    assert red.any()
