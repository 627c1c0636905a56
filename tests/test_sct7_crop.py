"""SCT 7's lesion_ms end to end on sc-crop's cord box, through the CLI and the real embedded Triton,
against a reference assembled from the authors' own packages: `sc_crop.detect` for the box (the
same test networks, the model's crop_metadata.json margins), `sc_crop.crop` / `sc_crop.uncrop`
around SCT's nnU-Net fork (`tests/nnunet_fork_oracle.py`) for the masks, and
`sc_crop.check_seg_truncation` for the warning. Required: the `_cropbox` file is sc-crop's box
voxel for voxel; the lesion mask is zero outside it and has Dice >= 0.999 with the reference on
every real image (the test lesion_ms is trained, see test_sct7_tasks.py).
"""

from __future__ import annotations

import json

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SCCROP_PADDING

from lesionseg.client.cli import main
from lesionseg.core.orientation import reorientation, sct_to_nib

pytestmark = [pytest.mark.server, pytest.mark.realdata, pytest.mark.slow]

ORACLE = Path(__file__).with_name("nnunet_fork_oracle.py")
FACES = ("xmin", "xmax", "ymin", "ymax", "zmin", "zmax")
IMAGES = ["t2/t2.nii.gz", "t2s/t2s.nii.gz", "t1/t1w.nii.gz", "t2/t2_fake_lesion.nii.gz", "t2s/t2s_uncropped.nii.gz"]


@pytest.fixture(scope="module")
def package(session_repository: Path):
    """sc_crop with the test networks the session repository serves (its classifier is found by
    download.ensure_cls_model, which checks the release's checksum: pointed at the test file)."""
    import sc_crop

    folder = next(p for p in session_repository.parent.iterdir() if p.name.startswith("sccrop_models"))
    download = sys.modules["sc_crop.download"]
    original = download.ensure_cls_model
    download.ensure_cls_model = lambda *a, **k: folder / "cls_model.onnx"
    yield sc_crop, folder / "det_model.onnx"
    download.ensure_cls_model = original


def reference(package, nnunet_fork: Path, model_dir: Path, path: Path, tmp_path: Path) -> tuple[dict, np.ndarray]:
    """SCT master's segment_nnunet with crop: sc-crop's box, the fork on the crop, sc-crop's uncrop."""
    sc_crop, detector = package
    img = nib.load(path)
    bbox = sc_crop.detect(img, model_path=str(detector), **SCCROP_PADDING)
    cropped = sc_crop.crop(img, bbox)
    data = np.asarray(cropped.dataobj, np.float32)
    orient = reorientation(cropped.affine, data.shape, sct_to_nib("LPI"))
    spacing = np.asarray(orient.forward_spacing(cropped.header.get_zooms()[:3]))[::-1]
    np.savez(tmp_path / "in.npz", data=orient.forward(data).transpose(2, 1, 0), spacing=spacing)
    done = subprocess.run([sys.executable, str(ORACLE), str(model_dir), str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                           "--ensemble"], env={**os.environ, "PYTHONPATH": str(nnunet_fork)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seg = orient.backward(np.load(tmp_path / "out.npz")["pred"].transpose(2, 1, 0)).astype(np.uint8)
    full = sc_crop.uncrop(nib.Nifti1Image(seg, cropped.affine), bbox)
    return {k: bbox[k] for k in FACES}, np.asarray(full.dataobj)


@pytest.mark.parametrize("image", IMAGES)
def test_lesion_ms_on_the_cord_box_equals_sct(sccrop_server, nnunet_fork: Path, package, shared: Path, tmp_path: Path,
                                             image: str, caplog: pytest.LogCaptureFixture) -> None:
    import sc_crop

    path = shared / "sct_testing_data" / image
    model_dir = next(p for p in sccrop_server.settings.repository.parent.iterdir() if p.name.startswith("nnunet_models")) / "lesion_ms"
    out = tmp_path / "out"
    assert main(["deepseg", "lesion_ms", "-i", str(path), "-ofolder", str(out), "-url", sccrop_server.settings.grpc_url]) == 0
    err = caplog.text  # the CLI's warnings (its logging goes to stderr outside pytest)
    stem = path.name.removesuffix(".nii.gz")
    cropbox = np.asarray(nib.load(out / f"{stem}_cropbox.nii.gz").dataobj)
    mask = np.asarray(nib.load(out / f"{stem}_lesion_seg.nii.gz").dataobj)
    box, expected = reference(package, nnunet_fork, model_dir, path, tmp_path)
    inside = np.argwhere(cropbox > 0)
    assert dict(zip(FACES, (int(v) for pair in zip(inside.min(0), inside.max(0)) for v in pair))) == box
    assert cropbox.sum() == np.prod([box[f"{a}max"] - box[f"{a}min"] + 1 for a in "xyz"])
    assert not mask[cropbox == 0].any()
    dice = 2 * np.logical_and(mask, expected).sum() / max(1, mask.sum() + expected.sum())
    print(f"{image}: box {box}, Dice {dice:.5f} vs sc-crop + SCT's fork ({expected.sum()} voxels)")
    assert expected.sum() > 0 and dice >= 0.999
    truncated = sc_crop.check_seg_truncation(nib.Nifti1Image(mask, nib.load(path).affine), box)
    if truncated:
        assert f"reaches the crop box at: {', '.join(truncated)}" in err
        assert "-box-" + truncated[0] + " <value>" in err
    else:
        assert "reaches the crop box" not in err


def test_box_options(sccrop_server, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"
    url = sccrop_server.settings.grpc_url
    given = {"xmin": 5, "xmax": 40, "ymin": 10, "ymax": 50, "zmin": 1, "zmax": 7}
    args = [f"-box-{k}={v}" for k, v in given.items()]
    assert main(["deepseg", "lesion_ms", "-i", str(path), "-o", str(tmp_path / "l.nii.gz"), "-url", url, *args]) == 0
    cropbox = np.asarray(nib.load(tmp_path / "l_cropbox.nii.gz").dataobj)
    inside = np.argwhere(cropbox > 0)
    assert dict(zip(FACES, (int(v) for pair in zip(inside.min(0), inside.max(0)) for v in pair))) == given
    mask = np.asarray(nib.load(tmp_path / "l.nii.gz").dataobj)
    assert not mask[cropbox == 0].any()
    capsys.readouterr()
    # -qc: SCT 7's second entry, sc-crop's box (command sc_crop, plane Ortho, the box outlined)
    qc = tmp_path / "qc"
    assert main(["deepseg", "lesion_ms", "-i", str(path), "-o", str(tmp_path / "q.nii.gz"), "-url", url, "-qc", str(qc), *args]) == 0
    entries = {e["command"]: e for e in (json.loads(p.read_text()) for p in (qc / "_json").glob("qc_*.json"))}
    assert set(entries) == {"deepseg", "sc_crop"}
    entry = entries["sc_crop"]
    assert entry["plane"] == "Ortho" and entry["fname_seg"] == str((tmp_path / "q_cropbox.nii.gz").resolve())
    assert entry["cmdline"] == f"sc_crop -i {path} --bbox {tmp_path / 'q_cropbox.nii.gz'}"
    from PIL import Image as PilImage

    from lesionseg.client.qc.mosaic import BOX_RGBA

    overlay = np.asarray(PilImage.open(qc / entry["overlay_img"]).convert("RGBA"))
    yellow = np.argwhere(np.all(overlay == BOX_RGBA, axis=-1))
    assert yellow.size and "sc_crop" in (qc / "index.html").read_text()
    capsys.readouterr()
    # an inverted box, a face outside the image, and -box-* on a task without sc-crop: usage errors, nothing written
    bad = tmp_path / "bad"
    assert main(["deepseg", "lesion_ms", "-i", str(path), "-ofolder", str(bad), "-url", url, "-box-zmin=7", "-box-zmax=2"]) == 2
    assert "inverted" in capsys.readouterr().err
    assert main(["deepseg", "lesion_ms", "-i", str(path), "-ofolder", str(bad), "-url", url, "-box-xmax=400"]) == 2
    assert "outside the image" in capsys.readouterr().err
    assert main(["deepseg", "seg_ms_lesion", "-i", str(path), "-ofolder", str(bad), "-url", url, "-box-xmin=3"]) == 2
    assert "only valid for models using the sc-crop pipeline" in capsys.readouterr().err
    assert not bad.exists() or not any(bad.iterdir())


def test_sct7_options_reach_the_server(sccrop_server, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-single-fold and -test-time-aug change the mask (they reach the ensemble); -soft-ms-lesion
    writes <in>_msLesionSoft.nii.gz, a soft map, instead of the mask; options a task cannot take
    are usage errors."""
    path = shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"
    url = sccrop_server.settings.grpc_url

    def run(folder: str, *options: str) -> Path:
        assert main(["deepseg", "lesion_ms", "-i", str(path), "-ofolder", str(tmp_path / folder), "-url", url, *options]) == 0
        return tmp_path / folder

    default = np.asarray(nib.load(run("default") / "t2s_lesion_seg.nii.gz").dataobj)
    for option in ("-single-fold", "-test-time-aug"):
        other = np.asarray(nib.load(run(option, option) / "t2s_lesion_seg.nii.gz").dataobj)
        assert np.count_nonzero(other != default) > 0.005 * default.size, f"{option} made no difference"
    soft_folder = run("soft", "-soft-ms-lesion")
    assert sorted(p.name for p in soft_folder.glob("*.nii.gz")) == ["t2s_cropbox.nii.gz", "t2s_msLesionSoft.nii.gz"]
    soft = np.asarray(nib.load(soft_folder / "t2s_msLesionSoft.nii.gz").dataobj)
    assert 0 <= soft.min() and soft.max() <= 1 and np.count_nonzero((soft > 0.05) & (soft < 0.95)) > 0
    assert not soft[np.asarray(nib.load(soft_folder / "t2s_cropbox.nii.gz").dataobj) == 0].any()
    capsys.readouterr()
    bad = str(tmp_path / "bad")
    assert main(["deepseg", "seg_sc_contrast_agnostic", "-i", str(path), "-ofolder", bad, "-url", url, "-single-fold"]) == 2
    assert "not an ensemble of separate folds" in capsys.readouterr().err
    assert main(["deepseg", "spinalcord", "-i", str(path), "-ofolder", bad, "-url", url, "-soft-ms-lesion"]) == 2
    assert "does not segment lesions alone" in capsys.readouterr().err
    assert main(["deepseg", "lesion_ms", "-i", str(path), "-ofolder", bad, "-url", url, "-soft-ms-lesion", "-thr", "0.5"]) == 2
    assert not Path(bad).exists()


def test_a_cord_task_on_the_cord_box(sccrop_server, package, shared: Path, tmp_path: Path) -> None:
    """A cord task trained on sc-crop's boxes (SCT 7's spinalcord) giving the cord of another
    task's results (the gateway's cord_task): segmented on sc-crop's box, pasted back."""
    from served import infer_task

    from lesionseg.client.servers import open_servers
    from lesionseg.client.task import TaskJob
    from lesionseg.core.nifti import load_nifti

    sc_crop, detector = package
    path = shared / "sct_testing_data" / "t2" / "t2.nii.gz"
    url = sccrop_server.settings.grpc_url
    with open_servers(url) as servers:
        result = TaskJob(servers=servers, task="seg_ms_lesion", cord_task="spinalcord").segment(load_nifti(path))
    img = nib.load(path)
    bbox = sc_crop.detect(img, model_path=str(detector), **SCCROP_PADDING)
    nib.save(sc_crop.crop(img, bbox), tmp_path / "crop.nii.gz")
    seg, _, _ = infer_task(url, tmp_path / "crop.nii.gz", "spinalcord")
    expected = np.asarray(sc_crop.uncrop(nib.Nifti1Image(seg, nib.load(tmp_path / "crop.nii.gz").affine), bbox).dataobj)
    assert expected.any() and expected.sum() < expected.size
    np.testing.assert_array_equal(result.cord, expected)
