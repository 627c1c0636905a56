"""nnU-Net tasks through the real embedded Triton vs nnunetv2's own predictor (the oracle).

Same checkpoint, same image (reoriented as SCT feeds it: the plan's orientation, (z, y, x),
reversed spacing), tile_step_size 0.5, gaussian, same mirroring and folds. Required: Dice >= 0.99
per foreground class; the max softmax difference is printed (the server returns probabilities
quantised to 1/255, and nnunetv2 accumulates tiles in float16).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import NNUNET_TASKS
from served import infer_task

from lesionseg.client.cli import main
from lesionseg.core.nifti import load_nifti
from lesionseg.core.orientation import reorientation, sct_to_nib

pytestmark = [pytest.mark.server, pytest.mark.realdata, pytest.mark.slow]

CASES = [
    ("seg_ms_lesion", "t2/t2.nii.gz"),
    ("seg_ms_lesion", "t2s/t2s.nii.gz"),
    ("seg_sc_contrast_agnostic", "t1/t1w.nii.gz"),
    ("test_multiclass", "t2/t2_fake_lesion.nii.gz"),
    ("seg_ms_lesion_realistic", "t2s/t2s.nii.gz"),
]


def oracle(task: str, image_path: Path, model_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """nnunetv2's nnUNetPredictor on the image as SCT feeds it; (labels, probabilities) on the input grid."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    variant, options = NNUNET_TASKS[task]
    folder = next(model_root.glob(f"{task}/*__nnUNetPlans__3d_fullres"))
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=options.get("mirroring", False),
                                device=torch.device("cpu"), verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=tuple(str(f) for f in variant.folds))
    image = load_nifti(image_path)
    orientation = json.loads((folder / "dataset.json").read_text()).get("image_orientation", "LPI")
    orient = reorientation(image.affine, image.data.shape, sct_to_nib(orientation))
    data = orient.forward(image.data)
    spacing = orient.forward_spacing(image.spacing)
    seg, prob = predictor.predict_single_npy_array(data.transpose(2, 1, 0)[None].astype(np.float32),
                                                   {"spacing": list(spacing[::-1])}, save_or_return_probabilities=True)
    seg = orient.backward(seg.transpose(2, 1, 0))
    prob = np.stack([orient.backward(p.transpose(2, 1, 0)) for p in prob])
    return seg, prob


@pytest.fixture(scope="module")
def model_root(session_repository: Path) -> Path:

    roots = [p for p in session_repository.parent.iterdir() if p.name.startswith("nnunet_models")]
    assert roots, "the session repository fixture did not build the nnU-Net test models"
    return roots[0]


@pytest.mark.parametrize(("task", "image"), CASES, ids=[f"{t}-{Path(i).name}" for t, i in CASES])
def test_dice_against_nnunetv2_predictor(nnunet_server, shared: Path, model_root: Path, task: str, image: str) -> None:
    path = shared / "sct_testing_data" / image
    volume = load_nifti(path)
    seg, prob, params = infer_task(nnunet_server.settings.grpc_url, volume, task)
    ref_seg, ref_prob = oracle(task, path, model_root)
    labels = json.loads(params["plan"])["labels"]
    assert seg.shape == ref_seg.shape == volume.data.shape
    for name, value in labels.items():
        if value == 0:
            continue
        a, b = seg == value, ref_seg == value
        dice = 2 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())
        diff = float(np.abs(prob[value - 1] / 255.0 - ref_prob[value]).max())
        print(f"{task} {image} class {name}: Dice {dice:.5f} ({a.sum()} vs {b.sum()} voxels), max softmax difference {diff:.4f}")
        assert b.sum() > 0, "the oracle segmented nothing: the test model is degenerate"
        assert dice >= 0.99


def test_deepseg_cli_outputs_and_sidecar(nnunet_server, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "sub-01_T2w.nii.gz"
    image.symlink_to(shared / "sct_testing_data" / "t2" / "t2.nii.gz")
    url = nnunet_server.settings.grpc_url
    assert main(["deepseg", "-i", str(image), "-task", "seg_ms_lesion", "-url", url]) == 0
    out = tmp_path / "sub-01_T2w_lesion_seg.nii.gz"
    tsv = tmp_path / "sub-01_T2w_lesion_seg_lesions.tsv"
    # every file written is listed: the mask, its sidecar, the lesion statistics
    assert capsys.readouterr().out.split() == [str(out), str(tmp_path / "sub-01_T2w_lesion_seg.json"), str(tsv),
                                               str(tsv.with_suffix(".json"))]
    from scipy import ndimage

    _, count = ndimage.label(np.asanyarray(nib.load(out).dataobj) > 0, structure=np.ones((3, 3, 3)))
    stats = json.loads(tsv.with_suffix(".json").read_text())
    assert stats["count"] == count == len(tsv.read_text().splitlines()) - 1
    mask = nib.load(out)
    source = nib.load(image)
    assert mask.get_data_dtype() == np.uint8 and mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-5)
    meta = json.loads((tmp_path / "sub-01_T2w_lesion_seg.json").read_text())
    generated = meta["GeneratedBy"][0]
    assert generated["Name"] == "lesionseg deepseg" and generated["Task"] == "seg_ms_lesion"
    assert generated["Model"]["url"].endswith("model_seg_ms_lesion_unet3d.zip") and generated["Model"]["source"]
    # an existing output is kept unless --overwrite
    before = out.stat().st_mtime_ns
    assert main(["deepseg", "-i", str(image), "-task", "seg_ms_lesion", "-url", url]) == 2
    assert "output exists (use --overwrite" in capsys.readouterr().err and out.stat().st_mtime_ns == before
    assert main(["deepseg", "-i", str(image), "-task", "seg_ms_lesion", "-url", url, "--overwrite"]) == 0
    assert out.stat().st_mtime_ns != before
    capsys.readouterr()
    # multi-class model: one file per foreground class
    qc = tmp_path / "qc"
    # (its lesion file has the name seg_ms_lesion wrote above: refused, then replaced with --overwrite)
    assert main(["deepseg", "-i", str(image), "-task", "test_multiclass", "-url", url, "-qc", str(qc)]) == 2
    capsys.readouterr()
    assert main(["deepseg", "-i", str(image), "-task", "test_multiclass", "-url", url, "-qc", str(qc), "--overwrite"]) == 0
    printed = capsys.readouterr().out.split()
    masks = [tmp_path / "sub-01_T2w_cord_seg.nii.gz", tmp_path / "sub-01_T2w_lesion_seg.nii.gz"]
    assert printed[:6] == [str(p) for p in (*masks, *(m.with_name(m.name.replace(".nii.gz", ".json")) for m in masks),
                                            tmp_path / "sub-01_T2w_lesion_seg_lesions.tsv",
                                            tmp_path / "sub-01_T2w_lesion_seg_lesions.json")]
    entry = json.loads(next((qc / "_json").glob("qc_*.json")).read_text())
    assert entry["command"] == "deepseg" and entry["lesions"]["count"] == json.loads(
        (tmp_path / "sub-01_T2w_lesion_seg_lesions.json").read_text())["count"]
    assert (Path(printed[6]) / "overlay_img.png").exists() and (qc / "index.html").exists()
    # post-processing flags change the mask as documented
    largest = tmp_path / "largest.nii.gz"
    assert main(["deepseg", "-i", str(image), "-task", "seg_ms_lesion", "-url", url, "-o", str(largest), "-largest", "1"]) == 0
    _, count = ndimage.label(np.asanyarray(nib.load(largest).dataobj) > 0)
    assert count == 1


def test_threshold_uses_probabilities(nnunet_server, shared: Path, tmp_path: Path) -> None:
    image = shared / "sct_testing_data" / "t2" / "t2.nii.gz"
    url = nnunet_server.settings.grpc_url
    from lesionseg.client.servers import open_servers
    from lesionseg.client.task import TaskJob

    with open_servers(url) as servers:  # a job asked for its probabilities holds them on the input grid
        result = TaskJob(servers=servers, task="seg_ms_lesion", probabilities=True).segment(load_nifti(image))
    _, prob, _ = infer_task(url, image, "seg_ms_lesion")
    (probability,) = result.probabilities.values()
    np.testing.assert_array_equal(probability, prob[0] / np.float32(255))
    assert main(["deepseg", "-i", str(image), "-task", "seg_ms_lesion", "-url", url, "-o", str(tmp_path / "t.nii.gz"), "-thr", "0.9"]) == 0
    mask = np.asanyarray(nib.load(tmp_path / "t.nii.gz").dataobj)
    np.testing.assert_array_equal(mask, (prob[0] > 0.9 * 255).astype(np.uint8))


def test_crop_to_cord_workflow_matches_manual_crop(nnunet_server, shared: Path, tmp_path: Path) -> None:
    """--crop-to-cord == (cord task -> crop 30/30/5 mm -> lesion task on the crop -> paste back)."""
    from lesionseg.client.crop import cord_dilation, cropped_affine, mask_box, uncrop
    from lesionseg.core.image import Image

    image_path = shared / "sct_testing_data" / "t2" / "t2_fake_lesion.nii.gz"
    url = nnunet_server.settings.grpc_url
    out = tmp_path / "lesion.nii.gz"
    assert main(["deepseg", "-i", str(image_path), "-task", "seg_ms_lesion", "--crop-to-cord", "-o", str(out), "-url", url]) == 0
    image = load_nifti(image_path)
    cord, _, _ = infer_task(url, image, "seg_sc_contrast_agnostic")
    box = mask_box(cord, cord_dilation(image.affine, image.spacing))
    cropped = Image(path=image.path, data=image.data[box.slices].copy(), affine=cropped_affine(image.affine, box),
                    header=image.header)
    lesion, _, _ = infer_task(url, cropped, "seg_ms_lesion")
    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), uncrop((lesion == 1).astype(np.uint8), box, image.data.shape))


def test_bad_requests_keep_the_server_healthy(nnunet_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tritonclient.grpc as grpcclient

    zero = tmp_path / "zero.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), zero)
    url = nnunet_server.settings.grpc_url
    assert main(["deepseg", "-i", str(zero), "-task", "seg_ms_lesion", "-url", url]) == 1
    assert "is all zero" in capsys.readouterr().err
    assert main(["deepseg", "-i", str(tmp_path / "missing.nii.gz"), "-task", "seg_ms_lesion", "-url", url]) == 1
    assert "does not exist" in capsys.readouterr().err
    ones = tmp_path / "ones.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), ones)
    assert main(["deepseg", "-i", str(ones), "-task", "no_such_task", "-url", url]) == 1
    assert "model 'no_such_task' is not ready" in capsys.readouterr().err
    assert main(["deepseg", "-i", str(ones), "-task", "deepseg_lesion_t2s", "-url", url]) in (1, 2)
    assert main(["deepseg", "-i", str(ones), "-task", "seg_ms_lesion", "-url", url, "-remove-small", "ten"]) == 2
    assert main(["deepseg", "-i", str(ones), "-task", "seg_ms_lesion", "-url", url, "-thr", "3"]) == 2
    capsys.readouterr()
    with grpcclient.InferenceServerClient(url) as client:
        assert client.is_server_ready() and client.is_model_ready("seg_ms_lesion")
