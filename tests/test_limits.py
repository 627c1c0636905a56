"""Bounds on the work an input can ask for (issue 23, finding 2): NIfTI spatial units, and a ceiling
on the voxels an image may expand to when a pipeline resamples it (`lesionseg.core.limits`),
checked by the server before it allocates, with one line naming the file, the size and the limit.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionseg.client.cli import main
from lesionseg.core.errors import InputError, UsageError
from lesionseg.core.limits import DEFAULT_MAX_VOXELS, MAX_VOXELS_ENV, LimitExceeded, check_resampled, max_voxels, resampled_shape
from lesionseg.core.nifti import load_nifti


def test_the_ceiling_and_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_VOXELS_ENV, raising=False)
    assert max_voxels() == DEFAULT_MAX_VOXELS == 2**28
    monkeypatch.setenv(MAX_VOXELS_ENV, "1000")
    assert max_voxels() == 1000 and max_voxels(5) == 5  # argument > environment > default
    check_resampled((10, 10, 10))
    with pytest.raises(LimitExceeded, match=r"IMAGE resampled to the model's spacing would be 10x10x11 = 1,100 voxels, "
                                            r"over the limit of 1,000 \(LESIONSEG_MAX_VOXELS\)"):
        check_resampled((10, 10, 11), what="IMAGE")
    with pytest.raises(LimitExceeded, match="x 2 channels = 2,000 voxels"):
        check_resampled((10, 10, 10), channels=2)
    for bad in ("lots", "0", "-3", "1.5"):
        monkeypatch.setenv(MAX_VOXELS_ENV, bad)
        with pytest.raises(UsageError, match=f"{MAX_VOXELS_ENV}='{bad}'"):
            max_voxels()


def test_resampled_shape_is_the_pipelines_rounding() -> None:
    assert resampled_shape((50, 60, 10), (0.5, 0.5, 5.0), (1.0, 1.0, None)) == (25, 30, 10)
    assert resampled_shape((49, 54, 9), (1e6, 1e6, 1e6), (1.0, 1.0, 10.0)) == (49_000_000, 54_000_000, 900_000)
    assert resampled_shape((3, 3, 3), (0.1, 0.1, 0.1), (10.0, 10.0, 10.0)) == (1, 1, 1)


def scaled(source: Path, target: Path, factor: float, *, units: str = "mm") -> Path:
    """`source` with its voxel size (and the affine's linear part) multiplied by `factor`, its
    header's spatial unit `units`."""
    image = nib.load(source)
    affine = image.affine.copy()
    affine[:3, :3] *= factor
    header = image.header.copy()
    out = nib.Nifti1Image(np.asanyarray(image.dataobj), affine, header)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    out.header.set_xyzt_units(xyz=units, t="sec")
    nib.save(out, target)
    return target


@pytest.mark.realdata
@pytest.mark.parametrize(("units", "words"), [("micron", "micrometres"), ("meter", "metres")])
def test_nifti_in_other_units_is_refused_with_the_unit_named(shared: Path, tmp_path: Path, units: str, words: str) -> None:
    """A header whose voxel sizes are in micrometres or metres is refused, the unit named (read as
    millimetres, a micrometre volume asks for 10^9 times the voxels on resampling)."""
    path = scaled(shared / "sct_testing_data" / "t2s" / "t2s.nii.gz", tmp_path / f"in_{units}.nii.gz", 1.0, units=units)
    with pytest.raises(InputError, match=rf"{path}: image voxel sizes are in {words} \(NIfTI xyzt_units\)"):
        load_nifti(path)


@pytest.mark.realdata
def test_nifti_in_millimetres_or_without_a_unit_is_read_as_millimetres(shared: Path, tmp_path: Path) -> None:
    source = shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"
    for units in ("mm", "unknown"):
        path = scaled(source, tmp_path / f"in_{units}.nii.gz", 1.0, units=units)
        assert load_nifti(path).spacing == pytest.approx(load_nifti(source).spacing)


@pytest.mark.server
@pytest.mark.realdata
@pytest.mark.parametrize(("command", "options"), [
    (["deepseg", "seg_ms_lesion"], []),            # nnU-Net
    (["deepseg", "lesion_ms"], []),                # sc-crop's detection first
    (["deepseg", "seg_sc_contrast_agnostic_monai"], []),
    (["deepseg-lesion"], ["-c", "t2s"]),           # the legacy pipeline
], ids=["nnunet", "sccrop", "monai", "legacy"])
def test_a_huge_voxel_size_is_refused_before_the_server_allocates(sccrop_server, legacy_server, shared: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str], command: list[str],
                                                                   options: list[str]) -> None:
    """1e6 mm voxels (the 488 GiB allocation of the finding): one line naming the file and the
    limit, exit 1, nothing written; the server answers the next image. The client refuses the
    nnU-Net, MONAI and legacy requests before sending; sc-crop's detection is refused by the server
    (its own check is tested alone below)."""
    source = shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"
    path = scaled(source, tmp_path / "huge.nii.gz", 1e6)
    url = sccrop_server.settings.grpc_url
    out = tmp_path / "out"
    assert main([*command, "-i", str(path), *options, "-ofolder", str(out), "-url", url]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and f"over the limit of {DEFAULT_MAX_VOXELS:,}" in err, err
    assert not out.exists() or not any(out.iterdir())
    assert main([*command, "-i", str(source), *options, "-ofolder", str(tmp_path / "ok"), "-url", url]) == 0


def test_the_client_refuses_before_sending(tmp_path: Path) -> None:
    """`check_work` (called by every request a job sends): the image in the model's orientation at
    its `resampled_spacing`; a model without the parameter is not checked here (the server is)."""
    from lesionseg.client.inference import check_work
    from lesionseg.core.image import Image
    from lesionseg.core.interface import ModelInfo

    def model(resampled: str | None) -> ModelInfo:
        parameters = {"orientation": {"string_value": "LPI"}}
        if resampled is not None:
            parameters["resampled_spacing"] = {"string_value": resampled}
        return ModelInfo.from_config({"name": "m", "input": [{"name": "IMAGE"}], "parameters": parameters})

    header = nib.Nifti1Header()
    header.set_data_shape((50, 60, 10))
    header.set_zooms((1e3, 1e3, 2.0))
    image = Image(path=tmp_path / "big.nii.gz", data=np.ones((50, 60, 10), np.float32), affine=np.diag([-1e3, -1e3, 2.0, 1.0]),
                  header=header)
    check_work(model(None), image)
    check_work(model("[1e4, 1e4, null]"), image)
    with pytest.raises(InputError, match=rf"{image.path}: the image resampled to the model's spacing would be "
                                         r"50000x60000x10 = 30,000,000,000 voxels, over the limit of 268,435,456 .* \(model m\)"):
        check_work(model("[1.0, 1.0, null]"), image)


def test_an_nnunet_plans_spacing_per_sent_axis() -> None:
    """The plan's spacing is in nnU-Net's transposed (z, y, x) order; IMAGE is sent (x, y, z)."""
    from lesionseg.server.pipelines.nnunet import NnunetPlan

    for spacing, transpose, expected in (((3.0, 0.8, 0.6), (0, 1, 2), (0.6, 0.8, 3.0)),   # (z, y, x) -> (x, y, z)
                                          ((1.0, 0.6, 0.5), (2, 0, 1), (1.0, 0.5, 0.6)),   # transposed: x first
                                          ((0.6, 0.5), (1, 0, 2), (0.5, None, 0.6))):      # 2D: the slice axis (y) kept
        p = NnunetPlan.__new__(NnunetPlan)
        object.__setattr__(p, "spacing", spacing)
        object.__setattr__(p, "transpose_forward", transpose)
        assert p.sent_axes_spacing() == expected


def test_a_singular_affine_and_an_empty_axis_are_named(tmp_path: Path) -> None:
    """Issue 23, finding 6: the errors named the wrong problem ("sheared", "all zero")."""
    singular = np.eye(4)
    singular[:3, 1] = singular[:3, 0]  # two voxel axes along the same direction
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.float32), singular), tmp_path / "singular.nii.gz")
    with pytest.raises(InputError, match=r"singular.nii.gz: image has a singular affine \(its voxel axes are not independent\)"):
        load_nifti(tmp_path / "singular.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((0, 5, 5), np.float32), np.eye(4)), tmp_path / "empty.nii.gz")
    with pytest.raises(InputError, match=r"empty.nii.gz: image has no voxels \(shape \(0, 5, 5\)\)"):
        load_nifti(tmp_path / "empty.nii.gz")


def test_a_qform_that_disagrees_with_the_sform_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 23, finding 6: which of two disagreeing geometries is used was chosen silently. The
    sform is used (nibabel's and SCT's choice), with one warning naming how far they disagree."""
    image = nib.Nifti1Image(np.ones((5, 5, 5), np.float32), np.eye(4))
    shifted = np.eye(4)
    shifted[:3, 3] = (0.0, 0.0, 12.5)
    image.set_qform(shifted, code=1)
    image.set_sform(np.eye(4), code=2)
    nib.save(image, tmp_path / "two.nii.gz")
    with caplog.at_level("WARNING"):
        loaded = load_nifti(tmp_path / "two.nii.gz")
    assert np.allclose(loaded.affine, np.eye(4))
    assert "two.nii.gz: its qform and sform disagree (by up to 12.5 mm); using the sform, as SCT does" in caplog.text
    caplog.clear()
    image.set_qform(np.eye(4), code=1)
    nib.save(image, tmp_path / "one.nii.gz")
    with caplog.at_level("WARNING"):
        load_nifti(tmp_path / "one.nii.gz")
    assert "disagree" not in caplog.text


@pytest.mark.server
@pytest.mark.realdata
@pytest.mark.parametrize("task", ["seg_ms_lesion", "seg_sc_contrast_agnostic_monai", "seg_ms_lesion_mp2rage_ivadomed"])
def test_the_server_checks_even_when_the_client_does_not(nnunet_server, shared: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
                                                         task: str) -> None:
    """The server's own check, before it allocates, for a client that skips its pre-check (another
    program, an older lesionseg): a per-request error naming the limit; the server answers the next."""
    from served import infer_task

    from lesionseg.core.errors import InferenceError

    if "ivadomed" in task:
        request.getfixturevalue("ivadomed_server")
    monkeypatch.setattr("lesionseg.client.inference.check_work", lambda model, image: None)
    source = shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"
    url = nnunet_server.settings.grpc_url
    with pytest.raises(InferenceError, match=rf"over the limit of {DEFAULT_MAX_VOXELS:,} \(LESIONSEG_MAX_VOXELS\)"):
        infer_task(url, scaled(source, tmp_path / "huge.nii.gz", 1e6), task)
    seg, _, _ = infer_task(url, source, task)
    assert seg.shape == nib.load(source).shape
