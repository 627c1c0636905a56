"""The legacy `sct_deepseg_lesion` pipeline end to end on the real embedded Triton with the real
SCT weights and the real test images of ../shared."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from served import legacy

from lesionseg.client.cli import main
from lesionseg.core.orientation import reorientation, sct_to_nib

pytestmark = [pytest.mark.server, pytest.mark.realdata, pytest.mark.slow]

DATA = "sct_testing_data"
OUTPUT_SUFFIXES = ("_lesionseg.nii.gz", "_RPI_seg.nii.gz", "_res_RPI_seg.nii.gz")


def _ncc(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of a 2D template at every valid position of a 2D image."""
    from scipy.signal import fftconvolve

    t = (template - template.mean()) / (template.std() or 1.0)
    ones = np.ones_like(t)
    s1 = fftconvolve(image, ones, mode="valid")
    s2 = fftconvolve(image**2, ones, mode="valid")
    std = np.sqrt(np.maximum(s2 - s1**2 / t.size, 1e-9))
    return fftconvolve(image, t[::-1, ::-1], mode="valid") / (std * np.sqrt(t.size))


def aligned_mask(image_path: Path, mask_path: Path, mask_image_path: Path) -> np.ndarray:
    """The manual cord mask on `image_path`'s grid.

    `t2s_seg.nii.gz` lies on the grid of `t2s.nii.gz`, a differently resliced crop of the
    acquisition `t2s_uncropped.nii.gz` (their affines differ in slice angulation and they disagree
    by several mm in world space). So when the grids differ, each slice of the mask's image is
    located in the image by normalised cross-correlation (best 2D translation over all slices;
    NCC > 0.7 required), and the mask slice is pasted there.
    """
    image, mask = nib.load(image_path), nib.load(mask_path)
    if image.shape == mask.shape and np.allclose(image.affine, mask.affine, atol=1e-3):
        return np.asanyarray(mask.dataobj) > 0
    small = nib.load(mask_image_path)
    assert nib.aff2axcodes(small.affine) == nib.aff2axcodes(image.affine) == ("L", "A", "S")
    template_data = np.asanyarray(small.dataobj).astype(float)
    mask_data = np.asanyarray(mask.dataobj) > 0
    target = np.asanyarray(image.dataobj).astype(float)
    out = np.zeros(target.shape, bool)
    nx, ny = template_data.shape[:2]
    for z in range(template_data.shape[2]):
        score, zb, x0, y0 = max(
            (float(scores.max()), k, *np.unravel_index(int(scores.argmax()), scores.shape))
            for k in range(target.shape[2])
            for scores in [_ncc(target[:, :, k], template_data[:, :, z])]
        )
        assert score > 0.7, f"slice {z} of {mask_image_path} not found in {image_path} (NCC {score:.2f})"
        out[x0 : x0 + nx, y0 : y0 + ny, zb] |= mask_data[:, :, z]
    return out


CASES = [
    # image, contrast, cord mask, image the mask belongs to
    ("t2s/t2s.nii.gz", "t2s", "t2s/t2s_seg.nii.gz", "t2s/t2s.nii.gz"),
    ("t2s/t2s_uncropped.nii.gz", "t2s", "t2s/t2s_seg.nii.gz", "t2s/t2s.nii.gz"),
    ("t2/t2.nii.gz", "t2_ax", "t2/t2_seg-manual.nii.gz", "t2/t2.nii.gz"),
    ("t2/t2_fake_lesion.nii.gz", "t2_ax", "t2/t2_fake_lesion_sc_seg.nii.gz", "t2/t2_fake_lesion.nii.gz"),
]


@pytest.mark.parametrize(("image", "contrast", "mask", "mask_image"), CASES, ids=[c[0] for c in CASES])
def test_pipeline_end_to_end(legacy_server, shared: Path, tmp_path: Path, image: str, contrast: str, mask: str, mask_image: str) -> None:
    data = shared / DATA
    result, outputs = legacy(legacy_server.settings.grpc_url, data / image, contrast, ofolder=tmp_path)
    files = {**outputs.masks, **outputs.maps}
    source = nib.load(data / image)
    name = Path(image).name.removesuffix(".nii.gz")
    sidecars = ("_lesionseg_lesions.tsv", "_lesionseg_lesions.json")
    assert set(outputs.files) == {tmp_path / f"{name}{s}" for s in (*OUTPUT_SUFFIXES, *sidecars)}
    assert all(path.is_file() for path in outputs.files)
    rpi = reorientation(source.affine, source.shape, sct_to_nib("RPI"))
    seg = nib.load(files["lesion"])
    assert seg.shape == source.shape and seg.get_data_dtype() == np.uint8
    np.testing.assert_allclose(seg.affine, source.affine, atol=1e-5)  # input geometry and orientation exactly
    assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1}
    rpi_seg = nib.load(files["rpi_seg"])
    assert nib.aff2axcodes(rpi_seg.affine) == ("L", "A", "S")  # SCT's RPI
    soft = np.asanyarray(rpi_seg.dataobj)
    assert soft.dtype == np.float32 and 0 <= soft.min() and soft.max() <= 1  # soft, as SCT leaves it
    np.testing.assert_array_equal(rpi.backward((soft >= 0.1 - 0.5 / 255).astype(np.uint8)), np.asanyarray(seg.dataobj))
    res = nib.load(files["res_rpi_seg"])
    assert np.allclose(nib.affines.voxel_sizes(res.affine)[:2], 0.5, atol=0.02)
    assert 0 <= float(np.asanyarray(res.dataobj).min()) and float(np.asanyarray(res.dataobj).max()) <= 1

    # the centerline lies inside the manual cord mask on >= 90 % of the slices the mask covers
    cord = rpi.forward(aligned_mask(data / image, data / mask, data / mask_image).astype(np.uint8))
    line = rpi.forward(result.centerline)  # one voxel per slice, the server's centre rounded
    covered = [z for z in range(cord.shape[2]) if cord[:, :, z].any()]
    inside = sum(bool(np.any(cord[:, :, z] & line[:, :, z])) for z in covered)
    print(f"{image}: centerline inside the cord mask on {inside}/{len(covered)} slices; {result.stats.total_voxels} lesion voxels")
    assert inside >= 0.9 * len(covered)


def test_t2_wiring_with_a_stand_in_model(legacy_server, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`-c t2` runs its own pipeline entry (t2 landmarks and z-score) on a stand-in network."""
    image = shared / DATA / "t2" / "t2.nii.gz"
    qc = tmp_path / "qc"
    code = main(["deepseg-lesion", "-i", str(image), "-c", "t2", "-ofolder", str(tmp_path), "-qc", str(qc),
                 "-url", legacy_server.settings.grpc_url])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.split()
    assert printed[:5] == [str(tmp_path / f"t2{s}") for s in (*OUTPUT_SUFFIXES, "_lesionseg_lesions.tsv", "_lesionseg_lesions.json")]
    entry = Path(printed[5])
    assert entry.parent.name == "deepseg-lesion" and entry.parent.parent.name == "t2"
    assert (entry / "background_img.png").is_file() and (entry / "overlay_img.png").is_file()
    (record,) = (qc / "_json").glob("qc_*.json")
    assert (qc / "index.html").is_file()
    stats = json.loads((tmp_path / "t2_lesionseg_lesions.json").read_text())
    from scipy import ndimage

    _, count = ndimage.label(np.asanyarray(nib.load(tmp_path / "t2_lesionseg.nii.gz").dataobj) > 0, structure=np.ones((3, 3, 3)))
    assert json.loads(record.read_text())["lesions"]["count"] == stats["count"] == count
    # an existing output is kept unless --overwrite
    assert main(["deepseg-lesion", "-i", str(image), "-c", "t2", "-ofolder", str(tmp_path), "-url", legacy_server.settings.grpc_url]) == 2
    assert "output exists" in capsys.readouterr().err


def test_centerline_from_a_file(legacy_server, shared: Path, tmp_path: Path) -> None:
    data = shared / DATA / "t2"
    result, _ = legacy(legacy_server.settings.grpc_url, data / "t2.nii.gz", "t2_ax", ofolder=tmp_path,
                       centerline=data / "t2_centerline-manual.nii.gz")
    manual = np.asanyarray(nib.load(data / "t2_centerline-manual.nii.gz").dataobj) > 0
    rpi = reorientation(result.image.affine, result.image.shape, sct_to_nib("RPI"))
    manual, line = rpi.forward(manual), rpi.forward(result.centerline)
    for z in range(manual.shape[2]):
        if manual[:, :, z].any():
            xs, ys = np.nonzero(manual[:, :, z])
            (x,), (y,) = np.nonzero(line[:, :, z])  # the server's centre, rounded to a voxel
            assert abs(x - xs.mean()) < 1.5 and abs(y - ys.mean()) < 1.5


# -- bad input: a clear one-line error, the documented exit code, no output, a healthy server --------

def _write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def bad_inputs(root: Path, shared: Path) -> dict[str, tuple[Path, str]]:
    real = shared / DATA / "t2s" / "t2s.nii.gz"
    raw = real.read_bytes()
    (root / "text.nii.gz").write_text("this is not an image")
    (root / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    (root / "bad_gzip.nii.gz").write_bytes(b"\x1f\x8b" + raw[2:100])
    nan = np.ones((10, 10, 4), np.float32)
    nan[2, 2, 2] = np.nan
    zero_spacing = nib.Nifti1Image(np.ones((10, 10, 4), np.float32), np.eye(4))
    zero_spacing.set_qform(None, code=0)
    zero_spacing.set_sform(None, code=0)
    nib.save(zero_spacing, root / "zspace.nii")
    raw_header = bytearray((root / "zspace.nii").read_bytes())
    raw_header[88:92] = np.float32(0).tobytes()  # pixdim[3], the z voxel size (nibabel will not write it)
    (root / "zspace.nii").write_bytes(bytes(raw_header))
    with gzip.open(root / "empty.nii.gz", "wb"):
        pass
    return {
        "not NIfTI": (root / "text.nii.gz", "not a readable NIfTI image"),
        "truncated .gz": (root / "truncated.nii.gz", "truncated or corrupt"),
        "broken gzip": (root / "bad_gzip.nii.gz", "NIfTI image"),
        "empty gzip": (root / "empty.nii.gz", "not a readable NIfTI image"),
        "2D": (_write(root / "flat.nii.gz", np.ones((10, 10), np.float32)), "must be 3D"),
        "4D": (_write(root / "four.nii.gz", np.ones((10, 10, 4, 3), np.float32)), "must be 3D"),
        "all zero": (_write(root / "zero.nii.gz", np.zeros((10, 10, 4), np.float32)), "is all zero"),
        "NaN": (_write(root / "nan.nii.gz", nan), "NaN or infinite"),
        "complex": (_write(root / "complex.nii.gz", np.ones((10, 10, 4), np.complex64)), "complex values"),
        "zero spacing": (root / "zspace.nii", "zero or invalid voxel size"),
        "missing": (root / "missing.nii.gz", "does not exist"),
    }


def test_bad_inputs(legacy_server, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    out = tmp_path / "out"
    url = legacy_server.settings.grpc_url
    for label, (path, message) in bad_inputs(inputs, shared).items():
        code = main(["deepseg-lesion", "-i", str(path), "-c", "t2s", "-ofolder", str(out), "-url", url])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1, label
        assert len(err) == 1 and err[0].startswith(f"lesionseg: error: {path}") and message in err[0], (label, err)
        assert "Traceback" not in err[0]
    assert not out.exists() or not any(out.iterdir())  # no partial output
    # unknown contrast and inconsistent centerline options are usage errors
    real = str(shared / DATA / "t2s" / "t2s.nii.gz")
    assert main(["deepseg-lesion", "-i", real, "-c", "flair", "-url", url]) == 2
    assert main(["deepseg-lesion", "-i", real, "-c", "t2s", "-centerline", "file", "-url", url]) == 2
    capsys.readouterr()
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        assert client.is_server_ready() and client.is_model_ready("deepseg_lesion_t2s")


def test_server_rejects_bad_requests_per_request(legacy_server) -> None:
    """Requests that bypass the client's checks get a per-request error; the server stays healthy."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    url = legacy_server.settings.grpc_url

    def call(image: np.ndarray, spacing: np.ndarray) -> None:
        with grpcclient.InferenceServerClient(url) as client:
            a = grpcclient.InferInput("IMAGE", list(image.shape), "FP32")
            a.set_data_from_numpy(image)
            b = grpcclient.InferInput("SPACING", [3], "FP32")
            b.set_data_from_numpy(spacing)
            client.infer("deepseg_lesion_t2s", [a, b])

    good_spacing = np.array([0.5, 0.5, 5.0], np.float32)
    for image, spacing, message in [
        (np.zeros((20, 20, 3), np.float32), good_spacing, "IMAGE is all zero"),
        (np.full((20, 20, 3), np.nan, np.float32), good_spacing, "NaN or infinite"),
        (np.ones((20, 20, 3), np.float32), np.array([0.5, 0.0, 5.0], np.float32), "SPACING must be 3 positive"),
        (np.ones((20, 20, 3), np.float32), good_spacing, "no spinal cord found"),
    ]:
        with pytest.raises(InferenceServerException, match=message):
            call(image, spacing)
    with grpcclient.InferenceServerClient(url) as client:
        assert client.is_server_ready()


def test_missing_model_and_embedded_server_for_the_run(tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """No server at the URL: the command starts the embedded server itself (and says so); a
    repository without the contrast's pipeline gives a clear error."""
    from conftest import SELFTEST_REPOSITORY

    from lesionseg.server.launch.embedded import free_port

    repo = tmp_path / "repo"
    shutil.copytree(SELFTEST_REPOSITORY, repo)
    monkeypatch.setenv("LESIONSEG_REPOSITORY", str(repo))
    image = shared / DATA / "t2s" / "t2s.nii.gz"
    code = main(["deepseg-lesion", "-i", str(image), "-c", "t2s", "-ofolder", str(tmp_path / "out"), "-url", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 1
    assert "starting the embedded server for this run" in err
    assert "model 'deepseg_lesion_t2s' is not ready" in err
    assert not (tmp_path / "out").exists()
