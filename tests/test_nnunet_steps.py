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
    (folder / "dataset.json").write_text(json.dumps({**dataset, "labels": {"background": 0, "whole": [1, 2]}, "regions_class_order": [1]}))
    with pytest.raises(ExportError, match="region-based"):
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
