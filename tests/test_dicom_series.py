"""DICOM MR series -> volume: the grid against dcm2niix (the oracle), the round trip from the real
volumes the series were written from, and one clear error per kind of bad series."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_data import SERIES, canonical, dcm2niix, source_volume, write

from lesionseg.client.cli import main
from lesionseg.client.dicom.series import read_series
from lesionseg.core.errors import InputError

pytestmark = pytest.mark.realdata

needs_dcm2niix = pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed (Debian: apt-get install dcm2niix)")


@pytest.fixture(scope="module")
def series_folders(shared: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dicom")
    return {name: write(shared, name, root / name) for name in SERIES}


@needs_dcm2niix
@pytest.mark.parametrize("name", list(SERIES))
def test_grid_matches_dcm2niix(series_folders, tmp_path, name):
    """Same voxel grid as dcm2niix: affines within 1e-4 mm after both are put in canonical axis
    order (the two tools order the rows differently), voxels equal (rescaled series: within
    1e-6 relative, dcm2niix keeps the slope as float32 in the header)."""
    series = read_series(series_folders[name])
    oracle = dcm2niix(series_folders[name], tmp_path)
    ours, our_affine = canonical(series.data, series.affine)
    theirs, their_affine = canonical(oracle.get_fdata(dtype=np.float64), oracle.affine)
    assert ours.shape == theirs.shape
    assert np.abs(our_affine - their_affine).max() < 1e-4
    if series.integer:
        assert np.array_equal(ours, theirs)
    else:
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * float(np.abs(theirs).max()))


@pytest.mark.parametrize("name", list(SERIES))
def test_round_trip_gives_the_source_volume(shared, series_folders, name):
    """The series read back is the real volume it was written from, in world space."""
    series = read_series(series_folders[name])
    data, affine = source_volume(shared, name)
    ours, our_affine = canonical(series.data, series.affine)
    source, source_affine = canonical(data.astype(np.float64), affine)
    assert np.abs(our_affine - source_affine).max() < 1e-4
    # stored as uint16 with one slope when the volume is not integer (T2*w is float32)
    step = (source.max() - source.min()) / 65535
    assert np.abs(ours - source).max() <= step / 2 + 1e-3
    assert series.multiframe == (name == "multiframe")


@needs_dcm2niix
def test_dicom2nifti_writes_dcm2niix_grid(series_folders, tmp_path, capsys):
    out = tmp_path / "oblique.nii.gz"
    assert main(["dicom2nifti", "-i", str(series_folders["oblique"]), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    import nibabel as nib

    ours = nib.load(str(out))
    assert ours.get_data_dtype() == np.int16
    oracle = dcm2niix(series_folders["oblique"], tmp_path / "oracle")
    a, a_affine = canonical(ours.get_fdata(), ours.affine)
    b, b_affine = canonical(oracle.get_fdata(), oracle.affine)
    assert np.abs(a_affine - b_affine).max() < 1e-4 and np.array_equal(a, b)
    assert '"SeriesInstanceUID"' in (tmp_path / "oblique.json").read_text()


@pytest.mark.parametrize("compression", ["jpegls", "rle"])
def test_compressed_series_read_like_uncompressed(shared, series_folders, tmp_path, compression):
    """JPEG-LS (pyjpegls) and RLE (pylibjpeg-rle) decode to the uncompressed series' voxels."""
    folder = write(shared, "sagittal", tmp_path / compression, compression=compression)
    assert pydicom.dcmread(str(next(folder.glob("*.dcm")))).file_meta.TransferSyntaxUID.is_compressed
    plain, packed = read_series(series_folders["sagittal"]), read_series(folder)
    assert np.array_equal(plain.data, packed.data) and np.allclose(plain.affine, packed.affine)


def test_instance_list_and_order_independence(series_folders):
    """A list of files reads like the folder, whatever the list's order (sorted by geometry)."""
    files = sorted(series_folders["sagittal"].glob("*.dcm"))
    rng = np.random.default_rng(0)
    shuffled = [files[i] for i in rng.permutation(len(files))]
    a, b = read_series(series_folders["sagittal"]), read_series(shuffled)
    assert np.array_equal(a.data, b.data) and np.allclose(a.affine, b.affine)


# --- bad series: one line naming the series or file and the problem, exit 1, no output ---------

def _copy(folder: Path, target: Path, keep=lambda name: True) -> Path:
    target.mkdir(parents=True)
    for file in sorted(folder.glob("*.dcm")):
        if keep(file.name):
            shutil.copy(file, target / file.name)
    return target


def _edit(folder: Path, change, which=lambda i, name: True) -> None:
    import pydicom

    for i, file in enumerate(sorted(folder.glob("*.dcm"))):
        if which(i, file.name):
            ds = pydicom.dcmread(str(file))
            change(ds)
            ds.save_as(str(file))


def _refused(folder, tmp_path, capsys, *needles) -> str:
    out = tmp_path / "out.nii.gz"
    code = main(["dicom2nifti", "-i", str(folder), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("lesionseg: error: ")
    for needle in needles:
        assert needle in err, err
    assert not out.exists() and not out.with_suffix("").with_suffix(".json").exists()
    return err


def test_non_mr_series(series_folders, tmp_path, capsys):
    folder = _copy(series_folders["sagittal"], tmp_path / "ct")
    _edit(folder, lambda ds: setattr(ds, "Modality", "CT"))
    _refused(folder, tmp_path, capsys, str(folder), "modality CT, not MR")


def test_missing_pixel_data(series_folders, tmp_path, capsys):
    folder = _copy(series_folders["sagittal"], tmp_path / "nopixels")
    _edit(folder, lambda ds: delattr(ds, "PixelData"), which=lambda i, name: i == 5)
    _refused(folder, tmp_path, capsys, "has no pixel data", "_0006.dcm")


def test_missing_slice(series_folders, tmp_path, capsys):
    folder = _copy(series_folders["sagittal"], tmp_path / "gap", keep=lambda name: not name.endswith("_0020.dcm"))
    _refused(folder, tmp_path, capsys, str(folder), "non-uniform slice spacing", "1 missing slice?")


def test_two_series_mixed(series_folders, tmp_path, capsys):
    folder = _copy(series_folders["sagittal"], tmp_path / "mixed")
    for file in sorted(series_folders["axial"].glob("*.dcm"))[:3]:
        shutil.copy(file, folder / file.name)
    _refused(folder, tmp_path, capsys, str(folder), "holds 2 series", "give the files of one series")


def test_inconsistent_pixel_spacing(series_folders, tmp_path, capsys):
    folder = _copy(series_folders["sagittal"], tmp_path / "spacing")
    _edit(folder, lambda ds: setattr(ds, "PixelSpacing", [1.2, 1.2]), which=lambda i, name: i == 7)
    _refused(folder, tmp_path, capsys, "inconsistent pixel spacing", "1.2x1.2 mm")


def test_mixed_orientations(series_folders, tmp_path, capsys):
    folder = _copy(series_folders["sagittal"], tmp_path / "orientation")
    _edit(folder, lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), which=lambda i, name: i == 3)
    _refused(folder, tmp_path, capsys, "mixes slice orientations")


def test_duplicate_position(series_folders, tmp_path, capsys):
    """Two slices at one position (a second echo, say) are refused, not silently dropped."""
    folder = _copy(series_folders["sagittal"], tmp_path / "echo")
    import pydicom

    files = sorted(folder.glob("*.dcm"))
    ds = pydicom.dcmread(str(files[4]))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID + ".2"
    ds.save_as(str(folder / "echo2.dcm"))
    _refused(folder, tmp_path, capsys, "two slices at the same position", "echo2.dcm")


def test_different_sizes(series_folders, tmp_path, capsys):
    folder = _copy(series_folders["sagittal"], tmp_path / "sizes")

    def crop(ds):
        pixels = ds.pixel_array[:40, :40].copy()
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.tobytes()

    _edit(folder, crop, which=lambda i, name: i == 9)
    _refused(folder, tmp_path, capsys, "mixes image sizes")


def test_unsupported_transfer_syntax(series_folders, tmp_path, capsys):
    """Pixel data in a syntax no installed handler decodes (MPEG-2) -> named, not a traceback."""
    from pydicom.encaps import encapsulate

    folder = _copy(series_folders["sagittal"], tmp_path / "mpeg2")

    def mpeg(ds):
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
        ds["PixelData"].VR = "OB"

    _edit(folder, mpeg, which=lambda i, name: i == 0)
    _refused(folder, tmp_path, capsys, "_0001.dcm", "transfer syntax", "cannot be decoded")


def test_truncated_file(series_folders, tmp_path, capsys):
    folder = _copy(series_folders["sagittal"], tmp_path / "truncated")
    victim = sorted(folder.glob("*.dcm"))[11]
    victim.write_bytes(victim.read_bytes()[:-2000])
    _refused(folder, tmp_path, capsys, victim.name, "truncated or corrupt")


def test_not_dicom_at_all(series_folders, tmp_path, capsys):
    folder = _copy(series_folders["sagittal"], tmp_path / "junk")
    (folder / "notes.dcm").write_text("not an image\n")
    _refused(folder, tmp_path, capsys, "notes.dcm", "not")


def test_too_small_to_segment(series_folders, tmp_path, capsys):
    folder = _copy(series_folders["sagittal"], tmp_path / "localizer", keep=lambda name: name.endswith(("_0001.dcm", "_0002.dcm")))
    _refused(folder, tmp_path, capsys, "too small to segment", "2 slices")


def test_reader_error_is_input_error(tmp_path):
    with pytest.raises(InputError, match="no DICOM files"):
        (tmp_path / "empty").mkdir()
        read_series(tmp_path / "empty")
