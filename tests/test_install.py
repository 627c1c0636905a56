"""Model install: the real download code against a local HTTP server serving zips the test makes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from lesionseg.client.cli import main
from lesionseg.export.install import SCT_LEGACY_RELEASES, DownloadError, fetch_release

pytestmark = pytest.mark.realdata


def make_release_zips(root: Path, shared: Path) -> None:
    """SCT's two ONNX release zips, at their real paths, holding ONNX files converted from the real
    .h5 weights (t2_lesion.onnx is a stand-in: the t2_ax weights)."""
    from lesionseg.export.keras_onnx import convert_keras_h5

    models = shared / "sct_models"
    lesion = {"t2_lesion.onnx": models / "deepseg_lesion" / "t2_ax_lesion.h5",
              "t2_ax_lesion.onnx": models / "deepseg_lesion" / "t2_ax_lesion.h5",
              "t2s_lesion.onnx": models / "deepseg_lesion" / "t2s_lesion.h5"}
    ctr = {f"{c}_ctr.onnx": models / "deepseg_sc" / f"{c}_ctr.h5" for c in ("t2", "t2s", "dwi")}
    for release, members in zip(SCT_LEGACY_RELEASES, (lesion, ctr)):
        target = root / release.path
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w") as archive:
            for name, h5 in members.items():
                archive.writestr(f"{target.stem}/{name}", convert_keras_h5(h5).SerializeToString())


def test_install_from_release_urls(http_root, shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    root, base = http_root
    make_release_zips(root, shared)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LESIONSEG_RELEASES_URL", base)
    repo = tmp_path / "repo"
    assert main(["models", "install", "sct-legacy", "--repository", str(repo)]) == 0
    assert "installed deepseg_lesion_t2, deepseg_lesion_t2_ax, deepseg_lesion_t2s" in capsys.readouterr().out
    for model in ("deepseg_lesion_t2s_net", "deepseg_ctr_t2_net", "deepseg_ctr_dwi_net", "deepseg_lesion_t2"):
        assert (repo / model / "config.pbtxt").exists()
    assert (repo / "deepseg_lesion_t2s_net" / "1" / "model.onnx").exists()
    downloads = tmp_path / "cache" / "lesionseg" / "downloads"
    assert sorted(p.name for p in downloads.iterdir()) == sorted(
        [r.filename for r in SCT_LEGACY_RELEASES] + [r.filename + ".sha256" for r in SCT_LEGACY_RELEASES])
    # a second install reuses the verified cache; a tampered cached archive is refused and removed
    cached = downloads / SCT_LEGACY_RELEASES[0].filename
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")
    assert main(["models", "install", "sct-legacy", "--repository", str(repo)]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert not cached.exists()


def test_download_errors_are_clear(http_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, base = http_root
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_release(SCT_LEGACY_RELEASES[0], base_url=base)
    target = root / SCT_LEGACY_RELEASES[0].path
    target.parent.mkdir(parents=True)
    target.write_bytes(b"this is not a zip")
    with pytest.raises(DownloadError, match="not a valid zip archive"):
        fetch_release(SCT_LEGACY_RELEASES[0], base_url=base)
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("t2s_lesion.onnx", b"x")
    with pytest.raises(DownloadError, match="archive lacks t2_lesion.onnx, t2_ax_lesion.onnx"):
        fetch_release(SCT_LEGACY_RELEASES[0], base_url=base)
    assert not (tmp_path / "cache" / "lesionseg" / "downloads" / SCT_LEGACY_RELEASES[0].filename).exists()


def test_install_from_folder_zip_and_sct_dir(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # a folder (the .h5 weights of ../shared)
    assert main(["models", "install", "sct-legacy", "--from", str(shared / "sct_models"), "--repository", str(tmp_path / "r1"), "--contrast", "t2s"]) == 0
    assert (tmp_path / "r1" / "deepseg_lesion_t2s" / "config.pbtxt").exists()
    # an SCT installation layout at $SCT_DIR
    sct = tmp_path / "sct"
    make_release_zips(tmp_path / "zips", shared)
    for release, folder in zip(SCT_LEGACY_RELEASES, ("deepseg_lesion_models", "deepseg_sc_models")):
        with zipfile.ZipFile(tmp_path / "zips" / release.path) as archive:
            archive.extractall(sct / "data" / folder)
    monkeypatch.setenv("SCT_DIR", str(sct))
    assert main(["models", "install", "sct-legacy", "--from", "sct", "--repository", str(tmp_path / "r2")]) == 0
    assert (tmp_path / "r2" / "deepseg_lesion_t2_ax_net" / "1" / "model.onnx").exists()
    # a local zip
    local_zip = tmp_path / "zips" / SCT_LEGACY_RELEASES[0].path
    assert main(["models", "install", "sct-legacy", "--from", str(local_zip), "--repository", str(tmp_path / "r3"), "--contrast", "t2s"]) == 1
    assert "no t2s_ctr model for contrast t2s" in capsys.readouterr().err  # the lesion zip alone lacks the centerline
    assert main(["models", "install", "sct-legacy", "--from", str(local_zip), "--repository", str(tmp_path / "r3")]) == 1
    assert "no complete legacy pipeline (t2 lacks t2_ctr; t2_ax lacks t2_ctr; t2s lacks t2s_ctr)" in capsys.readouterr().err
    # bad sources
    assert main(["models", "install", "sct-legacy", "--from", str(tmp_path / "nope")]) == 1
    assert "model source does not exist" in capsys.readouterr().err
    monkeypatch.delenv("SCT_DIR")
    assert main(["models", "install", "sct-legacy", "--from", "sct"]) == 1
    assert "needs $SCT_DIR" in capsys.readouterr().err


def test_install_nnunet_task_from_its_release_url(http_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`models install seg_ms_lesion_mp2rage` (SCT 6's name: one line names SCT 7's, lesion_ms_mp2rage)
    fetches the task's real release path (served here), verifies and extracts the zip, and exports
    the nnU-Net model folder it holds under SCT 7's name."""
    pytest.importorskip("torch")
    from lesionseg.core.catalogue import TASKS
    from lesionseg.export.install import task_release
    from synthetic_nnunet import Variant, make_model

    root, base = http_root
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LESIONSEG_RELEASES_URL", base)
    release = task_release(TASKS["lesion_ms_mp2rage"].url)
    model = make_model(tmp_path / "model", Variant(name="mp2rage", folds=(3,)))
    target = root / release.path
    target.parent.mkdir(parents=True)
    with zipfile.ZipFile(target, "w") as archive:
        for file in model.rglob("*"):
            if file.is_file():
                archive.write(file, file.relative_to(model.parent))
    repo = tmp_path / "repo"
    assert main(["models", "install", "seg_ms_lesion_mp2rage", "--repository", str(repo)]) == 0
    out, err = capsys.readouterr()
    assert "installed lesion_ms_mp2rage (lesion_ms_mp2rage_fold3_net)" in out
    assert "seg_ms_lesion_mp2rage is SCT 6's name of lesion_ms_mp2rage (SCT 7): using lesion_ms_mp2rage\n" in err
    assert (repo / "lesion_ms_mp2rage" / "config.pbtxt").exists()
    assert (repo / "lesion_ms_mp2rage_fold3_net" / "1" / "model.onnx").exists()
    from lesionseg.server.repository.modelconfig import parameters, read_config

    assert parameters(read_config(repo / "lesion_ms_mp2rage" / "config.pbtxt"))["source"] == TASKS["lesion_ms_mp2rage"].url
    # a zip that is not an nnU-Net model is refused before anything is exported
    (tmp_path / "cache").rename(tmp_path / "old-cache")
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("readme.txt", "nothing here")
    assert main(["models", "install", "seg_ms_lesion_mp2rage", "--repository", str(tmp_path / "repo2")]) == 1
    assert "archive lacks plans.json, dataset.json" in capsys.readouterr().err
    assert not (tmp_path / "repo2").exists()


@pytest.mark.slow  # builds and exports a MONAI network
def test_install_monai_release(http_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """`models install seg_sc_contrast_agnostic --release v2.5` fetches SCT 6.5's MONAI release path
    (served here) and exports the checkpoint it holds; an unknown release is a usage error."""
    pytest.importorskip("torch")
    from conftest import make_monai_checkpoint

    from lesionseg.core.catalogue import TASKS, release_url
    from lesionseg.export.install import task_release
    from lesionseg.server.repository.modelconfig import parameters, read_config

    root, base = http_root
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LESIONSEG_RELEASES_URL", base)
    url = release_url(TASKS["spinalcord"], "v2.5")
    target = root / task_release(url, ()).path
    target.parent.mkdir(parents=True)
    ckpt = make_monai_checkpoint(tmp_path / "best_model.ckpt")
    with zipfile.ZipFile(target, "w") as archive:
        archive.write(ckpt, "model_contrast-agnostic_20240930-1002/best_model.ckpt")
    repo = tmp_path / "repo"
    assert main(["models", "install", "spinalcord", "--release", "v2.5", "--repository", str(repo)]) == 0
    assert "installed spinalcord (spinalcord_net, MONAI checkpoint)" in capsys.readouterr().out
    assert parameters(read_config(repo / "spinalcord" / "config.pbtxt"))["source"] == url
    assert (repo / "spinalcord_net" / "1" / "model.onnx").exists()
    assert main(["models", "install", "seg_sc_contrast_agnostic", "--release", "v9", "--repository", str(repo)]) == 2
    assert "spinalcord has no release 'v9' (releases: v4.0, v3.0, v2.5)" in capsys.readouterr().err


def make_fold_zips(root: Path, tmp_path: Path, *, crop: dict | None) -> list[Path]:
    """SCT 7's lesion_ms release at its real paths: one zip per fold, each holding the model folder
    (nnUNetTrainer*/plans.json, dataset.json, fold_k) and crop_metadata.json at its root."""
    import json

    from synthetic_nnunet import LESION_MS, make_model

    from lesionseg.core.catalogue import TASKS
    from lesionseg.export.install import task_release

    model = make_model(tmp_path / "lesion_ms_model", LESION_MS)
    zips = []
    for k, url in enumerate(TASKS["lesion_ms"].default.urls):
        target = root / task_release(url).path
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w") as archive:
            for file in model.rglob("*"):
                inside = file.relative_to(model.parent)
                if file.is_file() and ("fold_" not in str(inside) or f"fold_{k}" in inside.parts):
                    archive.write(file, inside)
            if crop is not None:
                archive.writestr("crop_metadata.json", json.dumps({"sc_crop_version": "0.12.1", **crop}))
        zips.append(target)
    return zips


def test_install_lesion_ms_fold_zips_into_one_model(http_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`models install lesion_ms`: SCT 7's five fold zips unpacked into one model folder (as SCT
    does), exported as five voting folds, the crop margins of crop_metadata.json in the ensemble's
    `crop` parameter; a cropped release without the file is refused, as SCT refuses it."""
    pytest.importorskip("torch")
    import json

    from lesionseg.server.repository.modelconfig import parameters, read_config

    root, base = http_root
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LESIONSEG_RELEASES_URL", base)
    pads = {"pad_superior": 40, "pad_inferior": 100, "pad_left": 20, "pad_right": 20, "pad_anterior": 20, "pad_posterior": 20}
    make_fold_zips(root, tmp_path, crop=pads)
    repo = tmp_path / "repo"
    assert main(["models", "install", "lesion_ms", "--repository", str(repo)]) == 0
    assert "installed lesion_ms (lesion_ms_fold0_net, lesion_ms_fold1_net, lesion_ms_fold2_net, lesion_ms_fold3_net, " \
           "lesion_ms_fold4_net, on sc-crop's cord box)" in capsys.readouterr().out
    params = parameters(read_config(repo / "lesion_ms" / "config.pbtxt"))
    assert json.loads(params["crop"]) == {k: float(v) for k, v in pads.items()}
    plan = json.loads(params["plan"])
    assert plan["folds"] == ["0", "1", "2", "3", "4"] and plan["fold_combination"] == "vote"
    # the release without crop_metadata.json: refused, nothing written
    (tmp_path / "cache").rename(tmp_path / "old-cache")
    make_fold_zips(root, tmp_path / "again", crop=None)
    assert main(["models", "install", "lesion_ms", "--repository", str(tmp_path / "repo2")]) == 1
    assert "has no crop_metadata.json" in capsys.readouterr().err
    assert not (tmp_path / "repo2" / "lesion_ms").exists()


def test_install_from_an_sct7_installation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`--from sct` takes the model folder of SCT 7 ($SCT_DIR/data/deepseg_models/<model>)."""
    pytest.importorskip("torch")
    from synthetic_nnunet import SPINALCORD, make_model

    sct = tmp_path / "sct"
    make_model(sct / "data" / "deepseg_models" / "model_seg_sc_contrast_agnostic_nnunet", SPINALCORD)
    monkeypatch.setenv("SCT_DIR", str(sct))
    repo = tmp_path / "repo"
    assert main(["models", "install", "spinalcord", "--from", "sct", "--repository", str(repo)]) == 0
    assert "installed spinalcord (spinalcord_fold0_net, spinalcord_fold1_net)" in capsys.readouterr().out
    assert main(["models", "install", "lesion_ms", "--from", "sct", "--repository", str(repo)]) == 1
    assert "model_seg_ms_lesion: not installed in this SCT" in capsys.readouterr().err


def test_install_sccrop_from_its_release_url(http_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`models install sc-crop` downloads det_model.onnx and cls_model.onnx from the release path
    (served here) and checks each against the pinned SHA-256 (pinned here to the test networks':
    the real files cannot be fetched); a file that differs is refused and not kept."""
    pytest.importorskip("ultralytics")
    import sccrop_models

    from lesionseg.core.files import sha256
    from lesionseg.export import sccrop

    root, base = http_root
    folder = sccrop_models.make(root / sccrop.RELEASE_PATH)
    monkeypatch.setattr(sccrop, "WEIGHTS", {name: sha256(folder / name) for name in sccrop.WEIGHTS})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LESIONSEG_RELEASES_URL", base)
    repo = tmp_path / "repo"
    assert main(["models", "install", "sc-crop", "--repository", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "installed sccrop, sccrop_detector, sccrop_classifier into" in out and "not the released" not in out
    assert (repo / "sccrop_detector" / "1" / "model.onnx").read_bytes() == (folder / "det_model.onnx").read_bytes()
    # the release changed under the same name: the checksum refuses it and the cache keeps nothing
    (tmp_path / "cache").rename(tmp_path / "old-cache")
    (folder / "cls_model.onnx").write_bytes((folder / "cls_model.onnx").read_bytes() + b"\0")
    assert main(["models", "install", "sc-crop", "--repository", str(tmp_path / "repo2")]) == 1
    assert "cls_model.onnx: checksum mismatch" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "lesionseg" / "downloads" / f"sc-crop-{sccrop.MODEL_VERSION}" / "cls_model.onnx").exists()
    assert not (tmp_path / "repo2").exists()
