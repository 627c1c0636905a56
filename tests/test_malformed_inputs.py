"""Malformed inputs on the real embedded Triton server: each one gets ONE clear error line naming
the file (or the task) and the problem, the documented exit code (1 bad input, 2 usage), no
traceback and no partial output; the server stays healthy (checked after every test that used it:
live, ready, and every model of the commands the test ran ready) and still segments a good image.
The tests do not depend on their order.

The cases complement `test_legacy_e2e.py::test_bad_inputs` (which covers the basic ones through
`deepseg-lesion`): here every file case runs through `deepseg-lesion -c t2s` and through
`deepseg -task seg_ms_lesion`, and the geometry, dtype, header and task cases are added.
"""

from __future__ import annotations

import dataclasses
import gzip
import shutil
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

from lesionseg.client.cli import main

pytestmark = [pytest.mark.server, pytest.mark.realdata]

T2S = Path("sct_testing_data") / "t2s" / "t2s.nii.gz"
TASK = "seg_ms_lesion"
CONTRAST = "t2s"
NIFTI_HEADER_BYTES = 352  # 348-byte header + 4-byte extension flag of a single-file NIfTI-1


# -- synthetic inputs ---------------------------------------------------------------------------

def _real(shared: Path) -> nib.Nifti1Image:
    return nib.load(shared / T2S)


def _like(real: nib.Nifti1Image, data: np.ndarray, affine: np.ndarray | None = None) -> nib.Nifti1Image:
    """`data` with the real image's header (qform/sform codes, units) and `affine` (default its own)."""
    image = nib.Nifti1Image(data, real.affine if affine is None else affine, header=real.header.copy())
    image.set_data_dtype(data.dtype)
    return image


def _save(image: nib.Nifti1Image, path: Path) -> Path:
    nib.save(image, path)
    return path


def _patch_header(path: Path, offset: int, value: bytes) -> Path:
    """Overwrite header bytes of a .nii or .nii.gz file in place (nibabel refuses to write such headers)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = bytearray(handle.read())
    raw[offset : offset + len(value)] = value
    with opener(path, "wb") as handle:
        handle.write(bytes(raw))
    return path


def _real_data(shared: Path) -> np.ndarray:
    return np.asanyarray(_real(shared).dataobj).astype(np.float32)


def truncated_gz(root: Path, shared: Path) -> Path:
    """A .nii.gz cut in its compressed stream at a third (header intact, data stream broken)."""
    raw = (shared / T2S).read_bytes()
    path = root / "cut.nii.gz"
    path.write_bytes(raw[: len(raw) // 3])
    return path


def gz_of_truncated_nii(root: Path, shared: Path) -> Path:
    """A valid gzip stream whose content is a NIfTI with half of its voxel data missing."""
    with gzip.open(shared / T2S, "rb") as handle:
        raw = handle.read()
    path = root / "short.nii.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(raw[: NIFTI_HEADER_BYTES + (len(raw) - NIFTI_HEADER_BYTES) // 2])
    return path


def truncated_nii(root: Path, shared: Path) -> Path:
    """An uncompressed .nii with the last part of its voxel data missing."""
    with gzip.open(shared / T2S, "rb") as handle:
        raw = handle.read()
    path = root / "cut.nii"
    path.write_bytes(raw[: len(raw) - 1000])
    return path


def header_only(root: Path, shared: Path) -> Path:
    """The 352 header bytes of a real image and no voxel data at all."""
    with gzip.open(shared / T2S, "rb") as handle:
        raw = handle.read()
    path = root / "header_only.nii"
    path.write_bytes(raw[:NIFTI_HEADER_BYTES])
    return path


def empty_gz(root: Path, shared: Path) -> Path:
    path = root / "empty.nii.gz"
    path.write_bytes(b"")
    return path


def empty_nii(root: Path, shared: Path) -> Path:
    path = root / "empty.nii"
    path.write_bytes(b"")
    return path


def random_gz(root: Path, shared: Path) -> Path:
    path = root / "random.nii.gz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return path


def random_nii(root: Path, shared: Path) -> Path:
    """Random bytes, long enough for a header, named .nii."""
    path = root / "random.nii"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return path


def text_file(root: Path, shared: Path) -> Path:
    path = root / "notes.txt"
    path.write_text("subject 01: T2*w axial, see the protocol\n")
    return path


def missing(root: Path, shared: Path) -> Path:
    return root / "sub-404_T2star.nii.gz"


def rgb24(root: Path, shared: Path) -> Path:
    """NIfTI RGB24 (a structured dtype of three uint8 fields): a colour map, not an MR image."""
    data = np.zeros((20, 20, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    data["R"] = 200
    data["G"][5:15, 5:15] = 100
    path = root / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.5, 5.0, 1.0])), path)
    return path


def rgba32(root: Path, shared: Path) -> Path:
    data = np.zeros((20, 20, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
    data["A"] = 255
    data["R"][5:15, 5:15] = 100
    path = root / "rgba.nii"
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.5, 5.0, 1.0])), path)
    return path


def complex64(root: Path, shared: Path) -> Path:
    data = _real_data(shared)
    return _save(_like(_real(shared), (data + 1j * data).astype(np.complex64)), root / "complex.nii.gz")


def nan_values(root: Path, shared: Path) -> Path:
    data = _real_data(shared)
    data[20:25, 20:25, 4] = np.nan
    return _save(_like(_real(shared), data), root / "nan.nii.gz")


def inf_values(root: Path, shared: Path) -> Path:
    data = _real_data(shared)
    data[10, 10, 2] = np.inf
    return _save(_like(_real(shared), data), root / "inf.nii.gz")


def inf_intercept(root: Path, shared: Path) -> Path:
    """A valid scl_slope with an infinite scl_inter: the header's intensity scaling is broken."""
    path = _save(_like(_real(shared), _real_data(shared).astype(np.int16)), root / "inf_inter.nii.gz")
    _patch_header(path, 112, np.float32(2).tobytes())  # scl_slope
    return _patch_header(path, 116, np.float32(np.inf).tobytes())  # scl_inter


def huge_scl_slope(root: Path, shared: Path) -> Path:
    """int16 voxels with scl_slope 1e38: the scaled intensities overflow float32."""
    path = _save(_like(_real(shared), _real_data(shared).astype(np.int16)), root / "huge_slope.nii.gz")
    return _patch_header(path, 112, np.float32(1e38).tobytes())


def beyond_float32(root: Path, shared: Path) -> Path:
    """float64 values (1e300) that do not fit the float32 the pipeline computes in."""
    data = _real_data(shared).astype(np.float64)
    data[0, 0, 0] = 1e300
    return _save(_like(_real(shared), data), root / "huge_values.nii.gz")


def _shear() -> np.ndarray:
    shear = np.eye(4)
    shear[0, 1] = 0.5  # x moves with y: the voxel grid is a parallelogram, not a rectangle
    return shear


def sheared_affine(root: Path, shared: Path) -> Path:
    real = _real(shared)
    image = _like(real, _real_data(shared), real.affine @ _shear())
    image.set_qform(None, code=0)  # a qform cannot represent a shear; only the sform carries it
    return _save(image, root / "sheared.nii.gz")


def singular_affine(root: Path, shared: Path) -> Path:
    """An sform whose z column is zero (every slice at the same place) and no qform."""
    path = _save(_like(_real(shared), _real_data(shared)), root / "flat_sform.nii.gz")
    _patch_header(path, 252, np.int16(0).tobytes())  # qform_code: the sform is the affine
    for row in range(3):  # srow_x, srow_y, srow_z: 4 float32 each; element 2 is the z column
        _patch_header(path, 280 + 16 * row + 8, np.float32(0).tobytes())
    return path


def zero_pixdim(root: Path, shared: Path) -> Path:
    """pixdim[1] (the x voxel size) = 0 while the sform looks fine."""
    path = _save(_like(_real(shared), _real_data(shared)), root / "zero_pixdim.nii")
    return _patch_header(path, 80, np.float32(0).tobytes())


def negative_pixdim(root: Path, shared: Path) -> Path:
    path = _save(_like(_real(shared), _real_data(shared)), root / "negative_pixdim.nii.gz")
    return _patch_header(path, 84, np.float32(-0.5).tobytes())  # pixdim[2]


def nan_pixdim(root: Path, shared: Path) -> Path:
    path = _save(_like(_real(shared), _real_data(shared)), root / "nan_pixdim.nii.gz")
    return _patch_header(path, 88, np.float32(np.nan).tobytes())  # pixdim[3]


def one_voxel(root: Path, shared: Path) -> Path:
    return _save(nib.Nifti1Image(np.full((1, 1, 1), 100, np.float32), np.diag([0.5, 0.5, 5.0, 1.0])), root / "one_voxel.nii.gz")


def tiny(root: Path, shared: Path) -> Path:
    """2x2x2 voxels cut from the real image: far smaller than any network's field of view."""
    data = _real_data(shared)[24:26, 26:28, 4:6]
    return _save(_like(_real(shared), np.ascontiguousarray(data)), root / "tiny.nii.gz")


def huge_declared(root: Path, shared: Path) -> Path:
    """A NIfTI-2 header declaring 100000 x 100000 x 1000 voxels in front of a few kB of data."""
    path = _save(nib.Nifti2Image(np.ones((10, 10, 10), np.float32), np.eye(4)), root / "huge_dims.nii")
    return _patch_header(path, 16, np.array([3, 100000, 100000, 1000, 1, 1, 1, 1], np.int64).tobytes())


def huge_declared_nifti1(root: Path, shared: Path) -> Path:
    """A NIfTI-1 header declaring the int16 maximum, 32767 x 32767 x 1000 voxels, in front of 4 kB."""
    path = _save(nib.Nifti1Image(np.ones((10, 10, 10), np.float32), np.eye(4)), root / "huge_dims1.nii.gz")
    return _patch_header(path, 40, np.array([3, 32767, 32767, 1000, 1, 1, 1, 1], np.int16).tobytes())


def larger_than_data(root: Path, shared: Path) -> Path:
    """A header declaring 200^3 voxels (within limits) in front of 10^3 voxels of data."""
    path = _save(nib.Nifti1Image(np.ones((10, 10, 10), np.float32), np.eye(4)), root / "short_data.nii")
    return _patch_header(path, 40, np.array([3, 200, 200, 200, 1, 1, 1, 1], np.int16).tobytes())


def flat_2d(root: Path, shared: Path) -> Path:
    data = _real_data(shared)[:, :, 4]
    return _save(_like(_real(shared), np.ascontiguousarray(data)), root / "slice2d.nii.gz")


def four_d(root: Path, shared: Path) -> Path:
    data = _real_data(shared)
    return _save(_like(_real(shared), np.stack([data, data * 0.9], axis=-1)), root / "timeseries.nii.gz")


def all_zero(root: Path, shared: Path) -> Path:
    return _save(_like(_real(shared), np.zeros(_real(shared).shape, np.float32)), root / "zeros.nii.gz")


def bad_sizeof_hdr(root: Path, shared: Path) -> Path:
    path = root / "bad_sizeof_hdr.nii.gz"
    shutil.copyfile(shared / T2S, path)
    return _patch_header(path, 0, np.int32(999).tobytes())


def bad_magic(root: Path, shared: Path) -> Path:
    path = root / "bad_magic.nii.gz"
    shutil.copyfile(shared / T2S, path)
    return _patch_header(path, 344, b"xyz\0")


def nifti_named_mgz(root: Path, shared: Path) -> Path:
    """A valid NIfTI under a FreeSurfer extension."""
    path = root / "t2s.mgz"
    shutil.copyfile(shared / T2S, path)
    return path


def real_mgh(root: Path, shared: Path) -> Path:
    """A real FreeSurfer .mgz volume: readable, but not NIfTI."""
    real = _real(shared)
    return _save(nib.MGHImage(_real_data(shared), real.affine), root / "brain.mgz")


def analyze_pair(root: Path, shared: Path) -> Path:
    """An Analyze 7.5 .img/.hdr pair (no orientation information)."""
    path = root / "analyze.img"
    nib.save(nib.AnalyzeImage(_real_data(shared), np.diag([0.5, 0.5, 7.5, 1.0])), path)
    return path


def img_without_hdr(root: Path, shared: Path) -> Path:
    """Raw voxel bytes named .img with no .hdr beside it."""
    path = root / "lonely.img"
    path.write_bytes(_real_data(shared).tobytes())
    return path


@dataclasses.dataclass(frozen=True)
class Case:
    build: Callable[[Path, Path], Path]
    code: int
    problem: str  # a fragment of the one-line error that names the problem

    @property
    def id(self) -> str:
        return self.build.__name__


FILE_CASES = [
    Case(truncated_gz, 1, "truncated or corrupt"),
    Case(gz_of_truncated_nii, 1, "truncated or corrupt"),
    Case(truncated_nii, 1, "truncated or corrupt"),
    Case(header_only, 1, "truncated or corrupt"),
    Case(larger_than_data, 1, "truncated or corrupt"),
    Case(empty_gz, 1, "empty"),
    Case(empty_nii, 1, "empty"),
    Case(random_gz, 1, "not a readable NIfTI"),
    Case(random_nii, 1, "not a readable NIfTI"),
    Case(text_file, 1, "not a readable NIfTI"),
    Case(missing, 1, "does not exist"),
    Case(rgb24, 1, "RGB voxels"),
    Case(rgba32, 1, "RGBA voxels"),
    Case(complex64, 1, "complex values"),
    Case(nan_values, 1, "NaN or infinite"),
    Case(inf_values, 1, "NaN or infinite"),
    Case(inf_intercept, 1, "invalid intercept"),
    Case(huge_scl_slope, 1, "beyond the float32 range"),
    Case(beyond_float32, 1, "beyond the float32 range"),
    Case(sheared_affine, 1, "sheared voxel grid"),
    Case(singular_affine, 1, "voxel size"),
    Case(zero_pixdim, 1, "voxel size"),
    Case(negative_pixdim, 1, "voxel size"),
    Case(nan_pixdim, 1, "voxel size"),
    Case(one_voxel, 1, "too small"),
    Case(tiny, 1, "too small"),
    Case(huge_declared, 1, "too large"),
    Case(huge_declared_nifti1, 1, "too large"),
    Case(flat_2d, 1, "must be 3D"),
    Case(four_d, 1, "must be 3D"),
    Case(all_zero, 1, "all zero"),
    Case(bad_sizeof_hdr, 1, "header is corrupt (sizeof_hdr 999"),
    Case(bad_magic, 1, "not a readable NIfTI"),
    Case(nifti_named_mgz, 1, "expected a .nii or .nii.gz file"),
    Case(real_mgh, 1, "not NIfTI"),
    Case(analyze_pair, 1, "not NIfTI"),
    Case(img_without_hdr, 1, "not a readable NIfTI"),
]


def _good_copy(root: Path, shared: Path, name: str = "sub-01_T2star.nii.gz") -> Path:
    path = root / name
    shutil.copyfile(shared / T2S, path)
    return path


def _centerline_like(root: Path, shared: Path, name: str, data: np.ndarray, affine: np.ndarray) -> Path:
    mask = nib.Nifti1Image(data.astype(np.uint8), affine)
    mask.set_data_dtype(np.uint8)
    return _save(mask, root / name)


def _centerline_data(shared: Path) -> np.ndarray:
    line = np.zeros(_real(shared).shape, np.uint8)
    line[24, 27, :] = 1
    return line


def centerline_other_shape(root: Path, shared: Path) -> Path:
    """A centerline mask on a grid of another shape (the uncropped acquisition's size)."""
    line = np.zeros((60, 60, 9), np.uint8)
    line[30, 30, :] = 1
    return _centerline_like(root, shared, "ctr_other_shape.nii.gz", line, _real(shared).affine)


def centerline_shifted(root: Path, shared: Path) -> Path:
    """The right shape, but its grid lies 10 mm away from the image's."""
    affine = _real(shared).affine.copy()
    affine[:3, 3] += 10
    return _centerline_like(root, shared, "ctr_shifted.nii.gz", _centerline_data(shared), affine)


def centerline_empty(root: Path, shared: Path) -> Path:
    return _centerline_like(root, shared, "ctr_empty.nii.gz", np.zeros(_real(shared).shape), _real(shared).affine)


def centerline_truncated(root: Path, shared: Path) -> Path:
    good = _centerline_like(root, shared, "ctr_full.nii.gz", _centerline_data(shared), _real(shared).affine)
    path = root / "ctr_truncated.nii.gz"
    path.write_bytes(good.read_bytes()[:200])
    good.unlink()
    return path


def centerline_missing(root: Path, shared: Path) -> Path:
    return root / "ctr_missing.nii.gz"


def centerline_folder(root: Path, shared: Path) -> Path:
    path = root / "ctr_folder.nii.gz"
    path.mkdir()
    return path


CENTERLINE_CASES = [
    Case(centerline_other_shape, 1, "centerline is not on the grid"),
    Case(centerline_shifted, 1, "centerline is not on the grid"),
    Case(centerline_empty, 1, "centerline is all zero"),
    Case(centerline_truncated, 1, "centerline data is truncated or corrupt"),
    Case(centerline_missing, 1, "centerline file does not exist"),
    Case(centerline_folder, 1, "centerline is a directory"),
]


# -- checks ------------------------------------------------------------------------------------

def assert_one_error(capsys: pytest.CaptureFixture[str], code: int, expected_code: int, *fragments: str) -> str:
    """Exit code `expected_code`; stderr exactly one line, `lesionseg: error: ...` with every fragment; no traceback."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == expected_code, captured.err
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert len(lines) == 1, f"expected one error line, got:\n{captured.err}"
    assert lines[0].startswith("lesionseg: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    print(lines[0])  # the message, for the record (pytest -rP)
    return lines[0]


def assert_no_output(*folders: Path) -> None:
    """Nothing was written (no partial output, no leftover temporary file) in `folders`."""
    for folder in folders:
        left = sorted(folder.rglob("*")) if folder.exists() else []
        assert left == [], f"files written in {folder}: {left}"


def command(kind: str, image: Path, out: Path, url: str, *extra: str) -> list[str]:
    if kind == "deepseg-lesion":
        return ["deepseg-lesion", "-i", str(image), "-c", CONTRAST, "-ofolder", str(out), "-url", url, *extra]
    return ["deepseg", "-i", str(image), "-task", TASK, "-ofolder", str(out), "-url", url, *extra]


@pytest.fixture(scope="module")
def url(legacy_server, nnunet_server) -> str:
    """The session server, serving both the legacy t2s pipeline and the nnU-Net test tasks."""
    return legacy_server.settings.grpc_url


#: the models each command needs on the server
COMMAND_MODELS = {
    "deepseg-lesion": (f"deepseg_lesion_{CONTRAST}", f"deepseg_ctr_{CONTRAST}_net", f"deepseg_lesion_{CONTRAST}_net"),
    "deepseg": (TASK, f"{TASK}_preprocess", f"{TASK}_predict", f"{TASK}_postprocess"),
}
#: the commands run by the tests that have no `kind` parameter naming theirs
TEST_COMMANDS = {
    "test_malformed_centerline_file": ("deepseg-lesion",),
    "test_task_not_served_or_not_a_task": ("deepseg", "deepseg-lesion"),  # it names the legacy models as tasks
    "test_batch_with_malformed_subjects": ("deepseg",),
    "test_valid_image_segments_through_both_commands": ("deepseg-lesion", "deepseg"),
}


def assert_server_healthy(address: str, models: tuple[str, ...]) -> None:
    """The server at `address` is live and ready and serves every one of `models` ready."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(address) as client:
        assert client.is_server_live(client_timeout=30), "the server is not live"
        assert client.is_server_ready(client_timeout=30), "the server is not ready"
        not_ready = [model for model in models if not client.is_model_ready(model, client_timeout=30)]
        assert not_ready == [], f"models not ready: {not_ready}"


@pytest.fixture(autouse=True)
def server_stays_healthy(request: pytest.FixtureRequest):
    """After each test that used the session server: it is live and ready, and so is every model of
    the commands the test ran (its `kind`, or TEST_COMMANDS), whatever ran before or after it."""
    yield
    server = request.node.funcargs.get("server")  # set up for this test (never started here)
    if server is None:
        return
    callspec = getattr(request.node, "callspec", None)
    kind = callspec.params.get("kind") if callspec is not None else None
    commands = (kind,) if kind else TEST_COMMANDS.get(request.function.__name__, tuple(COMMAND_MODELS))
    models = tuple(model for command in commands for model in COMMAND_MODELS[command])
    assert_server_healthy(server.settings.grpc_url, models)


# -- the cases ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["deepseg-lesion", "deepseg"])
@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_malformed_image(case: Case, kind: str, url: str, shared: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    image = case.build(inputs, shared)
    before = sorted(inputs.rglob("*"))
    code = main(command(kind, image, out, url))
    assert_one_error(capsys, code, case.code, f"lesionseg: error: {image}: ", case.problem)
    assert_no_output(out)
    assert sorted(inputs.rglob("*")) == before  # nothing written next to the input either


@pytest.mark.parametrize("case", CENTERLINE_CASES, ids=[c.id for c in CENTERLINE_CASES])
def test_malformed_centerline_file(case: Case, legacy_server, shared: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    image = _good_copy(inputs, shared)
    centerline = case.build(inputs, shared)
    code = main(command("deepseg-lesion", image, out, legacy_server.settings.grpc_url,
                        "-centerline", "file", "-file_centerline", str(centerline)))
    assert_one_error(capsys, code, case.code, f"lesionseg: error: {centerline}: ", case.problem)
    assert_no_output(out)


TASK_CASES = [
    # (task, exit code, problem)
    ("no_such_task", 1, "model 'no_such_task' is not ready"),
    ("seg_ms_lesion_v999", 1, "model 'seg_ms_lesion_v999' is not ready"),
    ("deepseg_lesion_t2s", 2, "model 'deepseg_lesion_t2s' is not an nnU-Net task ensemble"),
    ("deepseg_ctr_t2s_net", 2, "model 'deepseg_ctr_t2s_net' is not an nnU-Net task ensemble"),
]


@pytest.mark.parametrize(("task", "code", "problem"), TASK_CASES, ids=[t[0] for t in TASK_CASES])
def test_task_not_served_or_not_a_task(task: str, code: int, problem: str, url: str, shared: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    image = _good_copy(inputs, shared)
    result = main(["deepseg", "-i", str(image), "-task", task, "-ofolder", str(out), "-url", url])
    assert_one_error(capsys, result, code, problem)
    assert_no_output(out)


USAGE_CASES = [
    # (-i value relative to tmp_path, what is built there, problem)
    ("empty_folder", "dir", "no NIfTI image found"),
    ("scan.nii.gz", "dir", "no NIfTI image found"),  # a folder named like an image
    ("nothing/*.nii.gz", None, "matches no NIfTI image"),
]


@pytest.mark.parametrize("kind", ["deepseg-lesion", "deepseg"])
@pytest.mark.parametrize(("name", "build", "problem"), USAGE_CASES, ids=[u[0] for u in USAGE_CASES])
def test_input_naming_no_image_is_a_usage_error(name: str, build: str | None, problem: str, kind: str, url: str,
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / name
    if build == "dir":
        target.mkdir()
    out = tmp_path / "out"
    code = main(command(kind, target, out, url))
    assert_one_error(capsys, code, 2, name, problem)
    assert_no_output(out)


def test_oblique_but_orthogonal_images_are_accepted(tmp_path: Path, shared: Path) -> None:
    """Rotated (oblique) acquisitions are legitimate: only a shear is refused."""
    from lesionseg.core.nifti import load_nifti
    from lesionseg.core.errors import InputError

    real = _real(shared)
    angle = np.radians(30)
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    oblique = _save(_like(real, _real_data(shared), rotation @ real.affine), tmp_path / "oblique.nii.gz")
    volume = load_nifti(oblique)
    np.testing.assert_allclose(volume.spacing, real.header.get_zooms(), rtol=1e-5)
    tiny_shear = np.eye(4)
    tiny_shear[0, 1] = 1e-5  # float rounding of a real sform: still orthogonal enough
    image = _like(real, _real_data(shared), real.affine @ tiny_shear)
    image.set_qform(None, code=0)
    load_nifti(_save(image, tmp_path / "rounded.nii.gz"))
    with pytest.raises(InputError, match="sheared voxel grid"):
        load_nifti(sheared_affine(tmp_path, shared))


def test_batch_with_malformed_subjects(url: str, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder of malformed images and one good one: the good subject is segmented, every bad one
    is reported failed in the summary and with one error line, nothing is written for it; exit 1."""
    folder, out = tmp_path / "cohort", tmp_path / "out"
    folder.mkdir()
    good = _good_copy(folder, shared, "sub-good_T2star.nii.gz")
    bad = [build(folder, shared) for build in (truncated_gz, empty_gz, random_nii, nan_values, sheared_affine,
                                                flat_2d, all_zero, rgb24)]
    bad.append(missing(tmp_path, shared))  # an explicit path that does not exist
    code = main(["deepseg", "-i", str(folder), str(bad[-1]), "-task", TASK, "-ofolder", str(out), "-url", url, "-j", "2"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    errors = captured.err.strip().splitlines()
    assert len(errors) == len(bad), captured.err
    assert all(line.startswith("lesionseg: error: ") for line in errors)
    for path in bad:
        assert sum(f"lesionseg: error: {path}: " in line for line in errors) == 1, (path, errors)
        rows = [line for line in captured.out.splitlines() if path.name in line]
        assert len(rows) == 1 and " failed " in rows[0], (path, captured.out)
    (good_row,) = [line for line in captured.out.splitlines() if good.name in line]
    assert " ok " in good_row
    assert f"{len(bad) + 1} subjects: 1 ok, 0 skipped, {len(bad)} failed" in captured.out
    written = sorted(p.name for p in out.rglob("*"))
    assert written == sorted(["sub-good_T2star_lesion_seg.nii.gz", "sub-good_T2star_lesion_seg.json",
                              "sub-good_T2star_lesion_seg_lesions.tsv", "sub-good_T2star_lesion_seg_lesions.json"]), written
    assert nib.load(out / "sub-good_T2star_lesion_seg.nii.gz").shape == _real(shared).shape


def test_valid_image_segments_through_both_commands(url: str, shared: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A valid image segments with exit 0 through both commands, with whichever malformed inputs
    the server was sent before (the server's health is checked after every test)."""
    image = _good_copy(tmp_path, shared)
    out = tmp_path / "out"
    assert main(command("deepseg", image, out, url)) == 0, capsys.readouterr().err
    assert (out / "sub-01_T2star_lesion_seg.nii.gz").is_file()
    assert main(command("deepseg-lesion", image, out, url)) == 0, capsys.readouterr().err
    assert (out / "sub-01_T2star_lesionseg.nii.gz").is_file()
    capsys.readouterr()
