"""ivadomed export: member discovery, config reading and refusals, and install of a release made
of one zip per member (served by a local HTTP server). Members here are tiny ONNX graphs
(sigmoid of the input) so no ivadomed is needed; parity with ivadomed is in test_ivadomed_e2e."""

from __future__ import annotations

import copy
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lesionseg.client.cli import main
from lesionseg.core.errors import ExportError, InputError, ModelNotFoundError
from lesionseg.export.ivadomed import export_ivadomed, find_members
from lesionseg.server.pipelines.ivadomed import IvadomedPlan, centre_crop, patch_starts, uncrop

sys.path.insert(0, str(Path(__file__).parent / "ivadomed_oracle"))
from oracle import CONFIG, NAME  # noqa: E402  (the oracle's config, plain data)


def sigmoid_onnx(op: str = "Sigmoid") -> bytes:
    from onnx import TensorProto, helper

    shape = ["N", 1, "h", "w", "d"]
    graph = helper.make_graph([helper.make_node(op, ["input"], ["output"])], "member",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def write_member(folder: Path, config: dict | None = None, onnx_bytes: bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{folder.name}.onnx").write_bytes(onnx_bytes or sigmoid_onnx())
    (folder / f"{folder.name}.json").write_text(json.dumps(config or CONFIG))
    return folder


def test_members_found_and_exported(tmp_path: Path) -> None:
    for seed in (2, 1):
        write_member(tmp_path / "ens" / f"seed{seed}" / NAME)
    (tmp_path / "ens" / "seed1" / "notes").mkdir()
    assert [m.parent.name for m in find_members(tmp_path / "ens")] == ["seed1", "seed2"]
    result = export_ivadomed(tmp_path / "ens", tmp_path / "repo", task="t")
    assert [m.network for m in result.plan.members] == ["t_member0_net", "t_member1_net"]
    member = result.plan.members[0]
    assert (member.slice_axis, member.spacing, member.crop, member.length, member.stride) == (2, (1.0, 1.0, 1.0), (32, 64, 128), (32, 64, 64), (1, 1, 64))
    assert [name for name, _ in member.postprocessing] == ["remove_noise", "binarize_prediction", "remove_small"]
    assert IvadomedPlan.from_json(result.plan.to_json()) == result.plan
    from lesionseg.server.repository.modelconfig import parameters, read_config

    params = parameters(read_config(tmp_path / "repo" / "t" / "config.pbtxt"))
    assert (params["kind"], params["orientation"], params["default_output"]) == ("ivadomed", "LPI", "soft")
    assert (tmp_path / "repo" / "t_member1_net" / "1" / "model.onnx").exists()
    assert main(["repository", "check", str(tmp_path / "repo")]) == 0


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["Modified3DUNet"].update(applied=False), "only 3D models"),
    (lambda c: c["transformation"].update(HistogramClipping={"min_percentile": 3}), "transformation 'HistogramClipping'"),
    (lambda c: c["postprocessing"].update(uncertainty={"thr": 0.1, "suffix": "_unc.nii.gz"}), "postprocessing step 'uncertainty'"),
    (lambda c: c["loader_parameters"].update(slice_axis="oblique"), "slice_axis 'oblique'"),
    (lambda c: c["transformation"].update(RandomAffine={"degrees": 5}), "transformation 'RandomAffine'"),  # no dataset_type: test too
])
def test_unsupported_configs_are_refused(tmp_path: Path, change, message: str) -> None:
    config = copy.deepcopy(CONFIG)
    change(config)
    write_member(tmp_path / NAME, config)
    with pytest.raises(ExportError, match=message):
        export_ivadomed(tmp_path / NAME, tmp_path / "repo", task="t")
    assert not (tmp_path / "repo").exists()


def test_training_only_transforms_are_ignored(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["transformation"]["RandomAffine"] = {"degrees": 5, "dataset_type": ["training"]}
    config["transformation"]["NormalizeInstance"]["dataset_type"] = ["training", "validation"]
    member = export_ivadomed(write_member(tmp_path / NAME, config), tmp_path / "repo", task="t").plan.members[0]
    assert not member.normalize and member.crop == (32, 64, 128)


def test_bad_members_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no ivadomed model"):
        export_ivadomed(tmp_path, tmp_path / "repo", task="t")
    folder = write_member(tmp_path / "a" / NAME, onnx_bytes=b"not onnx")
    with pytest.raises(InputError, match="not a usable ONNX network"):
        export_ivadomed(folder, tmp_path / "repo", task="t")
    folder = write_member(tmp_path / "b" / NAME, onnx_bytes=sigmoid_onnx("Neg"))
    with pytest.raises(ExportError, match=r"outside \[0, 1\]"):
        export_ivadomed(folder, tmp_path / "repo", task="t")
    folder = write_member(tmp_path / "c" / NAME)
    (folder / f"{NAME}.json").write_text("{broken")
    assert main(["export", "ivadomed", "--model-dir", str(folder), "--repository", str(tmp_path / "repo")]) == 1


def test_crop_and_patch_geometry() -> None:
    volume = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    crop, starts = centre_crop(volume, (2, 6, 3))
    assert starts == (2, -1, 0)  # int(round(1.5)) == 2 and int(round(-1.0)) == -1, as ivadomed
    assert np.array_equal(crop[:, 1:5], volume[2:4]) and not crop[:, 0].any() and not crop[:, 5].any()
    assert np.array_equal(uncrop(crop, starts, volume.shape)[2:4], volume[2:4])
    assert patch_starts((32, 64, 128), (32, 64, 64), (1, 1, 64)) == [(0, 0, 0), (0, 0, 64)]
    with pytest.raises(ValueError, match="cannot be cut"):
        patch_starts((32, 64, 100), (32, 64, 64), (1, 1, 64))


def test_install_release_of_member_zips(http_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`models install seg_ms_lesion_mp2rage --release r20230210` fetches SCT 6.x's five seed zips
    (at their real release paths, served here) and exports the ensemble."""
    from lesionseg.core.catalogue import TASKS, release_url
    from lesionseg.export.install import task_release

    root, base = http_root
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LESIONSEG_RELEASES_URL", base)
    urls = release_url(TASKS["lesion_ms_mp2rage"], "r20230210")
    assert isinstance(urls, tuple) and len(urls) == 5
    for url in urls:
        target = root / task_release(url, ()).path
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w") as archive:
            archive.writestr(f"{NAME}/{NAME}.onnx", sigmoid_onnx())
            archive.writestr(f"{NAME}/{NAME}.json", json.dumps(CONFIG))
    repo = tmp_path / "repo"
    assert main(["models", "install", "lesion_ms_mp2rage", "--release", "r20230210", "--repository", str(repo)]) == 0
    assert "installed lesion_ms_mp2rage (5 ivadomed members)" in capsys.readouterr().out
    assert sorted(p.name for p in repo.iterdir()) == ["lesion_ms_mp2rage"] + [f"lesion_ms_mp2rage_member{i}_net" for i in range(5)]
