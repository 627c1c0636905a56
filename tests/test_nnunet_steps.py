"""nnU-Net inference pieces against nnunetv2's own functions, and export refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lesionseg.core.errors import ExportError, ModelNotFoundError
from lesionseg.server.pipelines import nnunet
from lesionseg.server.pipelines.nnunet_resample import compute_new_shape, resample

nnunetv2 = pytest.importorskip("nnunetv2", reason="nnunetv2 (the oracle) is in the test extra")
torch = pytest.importorskip("torch")

import synthetic_nnunet as nnunet_models  # noqa: E402  (tests/: the synthetic nnU-Net models)


@pytest.mark.parametrize(("size", "tile"), [((20, 130, 97), (16, 48, 48)), ((16, 48, 48), (16, 48, 48)), ((110, 64, 65), (64, 64, 64))])
def test_tile_steps_match_nnunet(size: tuple, tile: tuple) -> None:
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    assert nnunet.steps_for_sliding_window(size, tile, 0.5) == compute_steps_for_sliding_window(size, tile, 0.5)


def test_gaussian_matches_nnunet() -> None:
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    ours = nnunet.gaussian_map((16, 48, 40))
    theirs = compute_gaussian((16, 48, 40), sigma_scale=1.0 / 8, value_scaling_factor=10, dtype=torch.float32, device=torch.device("cpu")).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


@pytest.mark.parametrize(("shape", "current", "new", "order"), [
    ((1, 9, 60, 70), (7.5, 0.5, 0.5), (3.0, 0.6, 0.6), 3),  # anisotropic: separate z
    ((1, 30, 40, 50), (1.0, 1.0, 1.0), (0.8, 0.9, 1.1), 3),
    ((2, 20, 30, 30), (5.0, 1.0, 1.0), (5.0, 0.7, 0.7), 1),
])
def test_resampling_matches_nnunet(shape: tuple, current: tuple, new: tuple, order: int) -> None:
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    target = compute_new_shape(shape[1:], current, new)
    expected = resample_data_or_seg_to_shape(data, target, current, new, False, order, 0, None)
    np.testing.assert_allclose(resample(data, target, current, new, order=order, order_z=0, force_separate_z=None), expected, atol=1e-5)


def test_normalisation_matches_nnunet() -> None:
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization, ZScoreNormalization

    rng = np.random.default_rng(1)
    image = rng.gamma(2, 300, size=(10, 20, 20)).astype(np.float32)
    image[:, :3] = 0
    mask = image != 0
    seg = np.where(mask, 0, -1).astype(np.int8)
    props = {"mean": 450.0, "std": 260.0, "percentile_00_5": 20.0, "percentile_99_5": 1500.0}
    np.testing.assert_allclose(nnunet.normalise(image, "ZScoreNormalization", mask=mask, props={}),
                               ZScoreNormalization(use_mask_for_norm=True, intensityproperties={}).run(image.copy(), seg), rtol=1e-5)
    np.testing.assert_allclose(nnunet.normalise(image, "ZScoreNormalization", mask=None, props={}),
                               ZScoreNormalization(use_mask_for_norm=False, intensityproperties={}).run(image.copy(), None), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nnunet.normalise(image, "CTNormalization", mask=None, props=props),
                               CTNormalization(use_mask_for_norm=False, intensityproperties=props).run(image.copy(), None), rtol=1e-5)


def test_properties_round_trip() -> None:
    props = nnunet.Properties(shape_before_cropping=(9, 60, 70), bbox=((0, 9), (3, 58), (1, 70)), shape_after_cropping=(9, 55, 69), spacing=(7.5, 0.5, 0.5))
    assert nnunet.Properties.unpack(*props.pack()) == props


def test_plan_round_trip_and_parameters(tmp_path: Path) -> None:
    from lesionseg.export.nnunet import export_nnunet

    folder = nnunet_models.make_model(tmp_path / "m", nnunet_models.VARIANTS[2])
    result = export_nnunet(folder, tmp_path / "repo", task="t")
    plan = result.plan
    assert nnunet.NnunetPlan.from_json(plan.to_json()) == plan
    assert plan.transpose_forward == (0, 2, 1) and plan.transpose_backward == (0, 2, 1)
    assert plan.orientation == "LPI" and plan.num_classes == 3 and plan.use_mask_for_norm == (True,)
    assert plan.networks == ("t_fold0_net", "t_fold1_net") and plan.mirror_axes == (0, 1, 2) and not plan.use_mirroring
    from lesionseg.server.repository.modelconfig import parameters, read_config

    ensemble = parameters(read_config(tmp_path / "repo" / "t" / "config.pbtxt"))
    assert ensemble["orientation"] == "LPI" and nnunet.NnunetPlan.from_json(ensemble["plan"]) == plan
    record = json.loads((tmp_path / "repo" / "t_fold0_net" / "export.json").read_text())
    assert record["parity"]["max_abs_diff"] < 1e-3


def test_checkpoint_best_is_the_fallback_and_orientation_comes_from_dataset_json(tmp_path: Path) -> None:
    from lesionseg.export.nnunet import export_nnunet

    folder = nnunet_models.make_model(tmp_path / "m", nnunet_models.Variant(name="x", folds=(3,)))
    (folder / "fold_3" / "checkpoint_final.pth").rename(folder / "fold_3" / "checkpoint_best.pth")
    dataset = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**dataset, "image_orientation": "RPI"}))
    result = export_nnunet(tmp_path / "m", tmp_path / "repo", task="t", folds=["3"], merge_folds=True)
    assert result.plan.orientation == "RPI" and result.plan.networks == ("t_net",)


def test_refusals(tmp_path: Path) -> None:
    from lesionseg.export.nnunet import export_nnunet

    folder = nnunet_models.make_model(tmp_path / "m", nnunet_models.Variant(name="x"))
    with pytest.raises(ModelNotFoundError, match="fold 4 is missing"):
        export_nnunet(folder, tmp_path / "r", task="t", folds=["4"])
    plans = json.loads((folder / "plans.json").read_text())
    broken = json.loads(json.dumps(plans))
    broken["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "my_lab.SwinUNETR"
    (folder / "plans.json").write_text(json.dumps(broken))
    with pytest.raises(ExportError, match="architecture 'my_lab.SwinUNETR' is not supported"):
        export_nnunet(folder, tmp_path / "r", task="t")
    (folder / "plans.json").write_text(json.dumps(plans))
    dataset = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**dataset, "labels": {"background": 0, "whole": [1, 2]}}))
    with pytest.raises(ExportError, match="region-based model needs dataset.json regions_class_order"):
        export_nnunet(folder, tmp_path / "r", task="t")
    (folder / "dataset.json").write_text(json.dumps({**dataset, "channel_names": {"0": "T1", "1": "T2"}}))
    with pytest.raises(ExportError, match="weights do not fit|2-channel"):
        export_nnunet(folder, tmp_path / "r", task="t")
    (folder / "dataset.json").write_text(json.dumps(dataset))
    shutil.rmtree(folder / "fold_0")
    shutil.rmtree(folder / "fold_1")
    with pytest.raises(ModelNotFoundError, match="no fold_"):
        export_nnunet(folder, tmp_path / "r", task="t")
    with pytest.raises(ModelNotFoundError, match="no nnU-Net model folder"):
        export_nnunet(tmp_path, tmp_path / "r", task="t")


def test_cli_export_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lesionseg.client.cli import main

    assert main(["export", "nnunet", "--model-dir", str(tmp_path / "none"), "--task", "t", "--repository", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model folder does not exist" in err[0]


def test_paths_given_relative_are_recorded_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`export nnunet --model-dir m --repository repo` typed in tmp_path: the model's source is
    recorded as the absolute folder, as it was meant where the command was typed."""
    from lesionseg.client.cli import main
    from lesionseg.server.repository.modelconfig import parameters, read_config

    folder = nnunet_models.make_model(tmp_path / "m", nnunet_models.Variant(name="x", folds=(0,)))
    monkeypatch.chdir(tmp_path)
    assert main(["export", "nnunet", "--model-dir", "m", "--task", "t", "--repository", "repo"]) == 0
    assert parameters(read_config(tmp_path / "repo" / "t" / "config.pbtxt"))["source"] == str(folder)
    assert json.loads((tmp_path / "repo" / "t_fold0_net" / "export.json").read_text())["source"] == str(folder)


def test_region_labels_follow_nnunets_label_manager() -> None:
    """Region-based labels (SCT 7's lesion_ms_axial_t2): heads, regions_class_order and each
    name's values as nnU-Net's LabelManager reads them; the voxel labels as it makes them."""
    import torch
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from lesionseg.export.nnunet import labels_of

    raw = {"background": 0, "sc": [1, 2], "lesion": 2}
    labels = labels_of({"labels": raw, "regions_class_order": [1, 2]})
    assert labels.names == {"background": 0, "sc": 1, "lesion": 2} and labels.heads == 2
    assert labels.regions_class_order == (1, 2) and labels.values == {"sc": [1, 2], "lesion": [2]}
    assert labels_of({"labels": {"background": 0, "cord": 1, "lesion": [2]}}).names == {"background": 0, "cord": 1, "lesion": 2}
    manager = LabelManager(raw, [1, 2])
    assert manager.has_regions and manager.num_segmentation_heads == labels.heads
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (2, 6, 7, 8)).astype(np.float32)
    plan = nnunet.NnunetPlan(
        orientation="AIL", transpose_forward=(0, 1, 2), transpose_backward=(0, 1, 2), spacing=(1.0, 1.0), patch_size=(8, 8),
        normalization=("ZScoreNormalization",), use_mask_for_norm=(False,), intensity_properties=({},),
        resampling_data={"order": 3, "order_z": 0, "force_separate_z": None},
        resampling_probabilities={"order": 1, "order_z": 0, "force_separate_z": None}, num_classes=2, labels=labels.names,
        regions_class_order=labels.regions_class_order, label_values=labels.values)
    props = nnunet.Properties(shape_before_cropping=(6, 7, 8), bbox=((0, 6), (0, 7), (0, 8)), shape_after_cropping=(6, 7, 8),
                              spacing=(2.0, 1.0, 1.0))
    seg, prob = nnunet.postprocess(logits, props, plan, probabilities=True)
    expected = manager.convert_logits_to_segmentation(torch.from_numpy(logits)).numpy()
    np.testing.assert_array_equal(seg, expected.transpose(2, 1, 0))
    assert set(np.unique(seg)) == {0, 1, 2} and prob.shape == (2, 8, 7, 6)
    np.testing.assert_allclose(prob / 255.0, torch.sigmoid(torch.from_numpy(logits)).numpy().transpose(0, 3, 2, 1), atol=1 / 255)
    with pytest.raises(ValueError, match="region-based"):
        nnunet.NnunetPlan.from_json(plan.to_json().replace('"sct_fork"', '"vote"').replace('"mean"', '"vote"'))


def test_2d_configurations_keep_the_slice_spacing_and_slide_per_slice() -> None:
    """nnU-Net 2D: no resampling along the first (slice) axis, the patch slid over each slice."""
    plan = nnunet.NnunetPlan(
        orientation="AIL", transpose_forward=(1, 0, 2), transpose_backward=(1, 0, 2), spacing=(0.5, 0.5), patch_size=(8, 8),
        normalization=("NoNormalization",), use_mask_for_norm=(False,), intensity_properties=({},),
        resampling_data={"order": 3, "order_z": 0, "force_separate_z": None},
        resampling_probabilities={"order": 1, "order_z": 0, "force_separate_z": None}, num_classes=2,
        labels={"background": 0, "lesion": 1})
    assert plan.target_spacing((7.5, 1.0, 1.0)) == (7.5, 0.5, 0.5)
    image = np.random.default_rng(0).random((10, 4, 6)).astype(np.float32) + 1  # (x, y, z): transposed (y, z, x)
    data, props = nnunet.preprocess(image, (1.0, 7.5, 1.0), plan)
    assert data.shape == (1, 4, 12, 20) and props.spacing == (7.5, 1.0, 1.0)
    seen = []

    def predict(tiles: np.ndarray) -> np.ndarray:
        seen.append(tiles.shape)
        return np.repeat(tiles.mean(axis=(2, 3), keepdims=True), 2, axis=1) * np.ones_like(tiles[:, :1])

    logits = nnunet.sliding_window(data, plan, predict)
    steps = nnunet.steps_for_sliding_window((12, 20), (8, 8), 0.5)
    assert seen == [(4 * len(steps[0]) * len(steps[1]), 1, 8, 8)] and logits.shape == (2, 4, 12, 20)
    seg, _ = nnunet.postprocess(logits, props, plan)
    assert seg.shape == image.shape


def test_trainer_class_is_loaded_as_sct_loads_it(tmp_path: Path) -> None:
    """trainer_class.py (SCT 7.2+): its trainer builds the network when it defines its own
    architecture; a trainer that only inherits nnU-Net's builds the plans' network; no
    `get_trainer_class`: ignored; a broken file: one line naming it, nothing written."""
    from lesionseg.export.nnunet import export_nnunet

    custom = nnunet_models.Variant(name="custom", trainer_class=True, folds=(0,), features=(4, 8), patch=(16, 32, 32))
    folder = nnunet_models.make_model(tmp_path / "c", custom)
    result = export_nnunet(folder, tmp_path / "repo", task="c")
    record = json.loads((tmp_path / "repo" / "c_fold0_net" / "export.json").read_text())
    assert record["trainer_class"] and record["parity"]["max_abs_diff"] < 1e-3
    assert result.plan.num_classes == 2
    code = (folder / "trainer_class.py").read_text()
    (folder / "trainer_class.py").write_text(code.replace("def get_trainer_class", "def something_else"))
    with pytest.raises(ExportError, match="weights do not fit"):  # the plans' network alone: the head's weights left over
        export_nnunet(folder, tmp_path / "r2", task="c")
    plain = nnunet_models.make_model(tmp_path / "p", nnunet_models.Variant(name="plain", folds=(0,), features=(4, 8), patch=(16, 32, 32)))
    (plain / "trainer_class.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n"
        "class nnUNetTrainer_2000epochs(nnUNetTrainer):\n    num_epochs = 2000\n\n"
        "def get_trainer_class():\n    return nnUNetTrainer_2000epochs\n")
    assert export_nnunet(plain, tmp_path / "r3", task="p").plan.num_classes == 2
    (plain / "trainer_class.py").write_text("import no_such_module_here\n")
    with pytest.raises(ExportError, match=r"trainer_class.py: cannot import what it needs") as caught:
        export_nnunet(plain, tmp_path / "r4", task="p")
    assert "\n" not in str(caught.value) and not (tmp_path / "r4").exists()


def test_cli_export_takes_the_fold_combination_and_the_crop_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`export nnunet --fold-combination sct_fork` on a model folder whose root holds sc-crop's
    crop_metadata.json (SCT 7's cropped releases): both reach the ensemble; a broken file is one line."""
    from lesionseg.client.cli import main
    from lesionseg.core.interface import CROP_PAD_KEYS
    from lesionseg.server.repository.modelconfig import parameters, read_config

    nnunet_models.make_model(tmp_path / "m", nnunet_models.Variant(name="x", folds=(0,), features=(4, 8), patch=(16, 32, 32)))
    padding = dict(zip(CROP_PAD_KEYS, (40.0, 100.0, 15.0, 15.0, 15.0, 22.0)))
    (tmp_path / "m" / "crop_metadata.json").write_text(json.dumps({"sc_crop_version": "0.12.1", **padding}))
    argv = ["export", "nnunet", "--model-dir", str(tmp_path / "m"), "--task", "t", "--repository", str(tmp_path / "r"),
            "--fold-combination", "sct_fork"]
    assert main(argv) == 0
    assert "folds combined: sct_fork, on sc-crop cord boxes" in capsys.readouterr().out
    ensemble = parameters(read_config(tmp_path / "r" / "t" / "config.pbtxt"))
    assert nnunet.NnunetPlan.from_json(ensemble["plan"]).fold_combination == "sct_fork"
    assert json.loads(ensemble["crop"]) == padding
    del padding["pad_left"]
    (tmp_path / "m" / "crop_metadata.json").write_text(json.dumps(padding))
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "crop_metadata.json" in err[0] and "pad_left" in err[0]
