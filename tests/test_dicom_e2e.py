"""The DICOM path of the CLI on the real server: a DICOM series as -i gives the masks the NIfTI path
gives for the same image (its `dicom2nifti` conversion), and its DICOM SEG decodes (highdicom) to
those very voxels, with the SR numbers of `_lesions.tsv`."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_data import dciodvfy_errors, decode_segment, sr_numbers, write

from lesionseg.client.cli import main
from lesionseg.client.dicom.series import read_series

pytestmark = [pytest.mark.server, pytest.mark.realdata, pytest.mark.slow]

needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy not installed (Debian: apt-get install dicom3tools)")


@pytest.fixture(scope="module")
def folders(shared: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dicom_e2e")
    return {name: write(shared, name, root / name) for name in ("axial", "sagittal", "oblique", "multiframe")}


def _nifti_of(folder: Path, where: Path) -> Path:
    out = where / f"{folder.name}.nii.gz"
    assert main(["dicom2nifti", "-i", str(folder), "-o", str(out)]) == 0
    return out


def _tsv_volumes(path: Path) -> list[float]:
    with open(path, newline="") as handle:
        return [float(row["volume_mm3"]) for row in csv.DictReader(handle, delimiter="\t")]


@needs_dciodvfy
def test_legacy_t2s_dicom_equals_nifti_path(legacy_server, folders, tmp_path, capsys):
    url = legacy_server.settings.grpc_url
    series = read_series(folders["axial"])
    nifti = _nifti_of(folders["axial"], tmp_path)
    assert main(["deepseg-lesion", "-i", str(nifti), "-c", "t2s", "-ofolder", str(tmp_path / "nifti"), "-url", url]) == 0
    out = tmp_path / "dicom"
    assert main(["deepseg-lesion", "-i", str(folders["axial"]), "-c", "t2s", "-ofolder", str(out), "-url", url,
                 "--output-format", "both"]) == 0
    printed = capsys.readouterr().out.split()
    seg_file, sr_file = out / "axial_deepseg_lesion_t2s_seg.dcm", out / "axial_deepseg_lesion_t2s_sr.dcm"
    assert str(seg_file) in printed and str(sr_file) in printed

    reference = np.asanyarray(nib.load(str(tmp_path / "nifti" / "axial_lesionseg.nii.gz")).dataobj)
    ours = np.asanyarray(nib.load(str(out / "axial_lesionseg.nii.gz")).dataobj)
    assert reference.any(), "the real T2*w model finds lesions in this image"
    assert np.array_equal(ours, reference)
    assert np.array_equal(decode_segment(seg_file, series, "multiple sclerosis lesion"), reference)
    assert dciodvfy_errors(seg_file) == [] and dciodvfy_errors(sr_file) == []
    numbers = sr_numbers(sr_file)
    volumes = _tsv_volumes(tmp_path / "nifti" / "axial_lesionseg_lesions.tsv")
    assert numbers["count"] == len(volumes)
    assert sorted(numbers["lesions"].values()) == pytest.approx(sorted(volumes), abs=5e-4)  # the TSV's 3 decimals
    assert numbers["total_mm3"] == pytest.approx(sum(volumes), abs=1e-3 * len(volumes))

    # a re-run replaces: the same UIDs
    first = pydicom.dcmread(str(seg_file)).SOPInstanceUID
    assert main(["deepseg-lesion", "-i", str(folders["axial"]), "-c", "t2s", "-ofolder", str(out), "-url", url,
                 "--output-format", "dicom"]) == 2  # outputs exist
    assert main(["deepseg-lesion", "-i", str(folders["axial"]), "-c", "t2s", "-ofolder", str(out), "-url", url,
                 "--output-format", "dicom", "--overwrite"]) == 0
    assert pydicom.dcmread(str(seg_file)).SOPInstanceUID == first


@needs_dciodvfy
@pytest.mark.parametrize("name", ["sagittal", "oblique", "multiframe"])
def test_nnunet_task_dicom_only(nnunet_server, folders, tmp_path, name):
    """--output-format dicom: only the SEG and SR are written; the SEG's lesion segment is the
    mask the NIfTI path writes for the converted image."""
    url = nnunet_server.settings.grpc_url
    series = read_series(folders[name])
    nifti = _nifti_of(folders[name], tmp_path)
    assert main(["deepseg", "-i", str(nifti), "-task", "seg_ms_lesion", "-ofolder", str(tmp_path / "nifti"), "-url", url]) == 0
    reference = np.asanyarray(nib.load(str(tmp_path / "nifti" / f"{name}_lesion_seg.nii.gz")).dataobj)
    out = tmp_path / "dicom"
    assert main(["deepseg", "-i", str(folders[name]), "-task", "seg_ms_lesion", "-ofolder", str(out), "-url", url,
                 "--output-format", "dicom"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{name}_seg_ms_lesion_seg.dcm", f"{name}_seg_ms_lesion_sr.dcm"]
    assert np.array_equal(decode_segment(out / f"{name}_seg_ms_lesion_seg.dcm", series, "multiple sclerosis lesion"), reference)
    assert dciodvfy_errors(out / f"{name}_seg_ms_lesion_seg.dcm") == []
    assert sr_numbers(out / f"{name}_seg_ms_lesion_sr.dcm")["count"] == len(
        _tsv_volumes(tmp_path / "nifti" / f"{name}_lesion_seg_lesions.tsv"))


def test_crop_to_cord_adds_the_cord_segment(nnunet_server, folders, tmp_path):
    """With --crop-to-cord the cord mask the crop came from is the SEG's second segment."""
    url = nnunet_server.settings.grpc_url
    series = read_series(folders["sagittal"])
    out = tmp_path / "dicom"
    code = main(["deepseg", "-i", str(folders["sagittal"]), "-task", "seg_ms_lesion", "--crop-to-cord", "-ofolder", str(out),
                 "-url", url, "--output-format", "dicom"])
    assert code == 0  # the seeded random-weight cord model finds a cord in this image
    cord = decode_segment(out / "sagittal_seg_ms_lesion_seg.dcm", series, "spinal cord")
    nifti = _nifti_of(folders["sagittal"], tmp_path)
    assert main(["deepseg", "-i", str(nifti), "-task", "seg_sc_contrast_agnostic", "-o", str(tmp_path / "cord.nii.gz"), "-url", url]) == 0
    assert np.array_equal(cord, np.asanyarray(nib.load(str(tmp_path / "cord.nii.gz")).dataobj))


def test_dicom_output_of_nifti_input_is_a_usage_error(nnunet_server, shared, tmp_path, capsys):
    image = shared / "sct_testing_data" / "t2" / "t2.nii.gz"
    code = main(["deepseg", "-i", str(image), "-task", "seg_ms_lesion", "-ofolder", str(tmp_path), "-url",
                 nnunet_server.settings.grpc_url, "--output-format", "dicom"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "this input is NIfTI" in err and str(image) in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")  # pydicom, writing the over-long UID
def test_dicom_output_of_a_series_with_a_non_conformant_uid_is_refused(legacy_server, shared, tmp_path, capsys):
    """Issue 23, finding 6: a SEG must reference its source by UIDs a conformant object can carry;
    a source with a 70-character SOP Instance UID was copied into the SEG. Refused in one line
    naming the file, nothing written; the NIfTI output of the same series still works."""
    folder = write(shared, "axial", tmp_path / "series")
    victim = sorted(folder.iterdir())[3]
    ds = pydicom.dcmread(victim)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ("2.25." + "1" * 70)[:70]
    ds.save_as(victim)
    out = tmp_path / "out"
    url = legacy_server.settings.grpc_url
    code = main(["deepseg-lesion", "-i", str(folder), "-c", "t2s", "-ofolder", str(out), "-url", url, "--output-format", "dicom"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"{victim}: SOP Instance UID" in err and "is not a conformant DICOM UID (70 characters, over 64)" in err
    assert not out.exists() or not any(out.iterdir())
    assert main(["deepseg-lesion", "-i", str(folder), "-c", "t2s", "-ofolder", str(out), "-url", url]) == 0
