"""`lesionseg repository check`: every problem found, each on its own line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SELFTEST_REPOSITORY

from lesionseg.client.cli import main
from lesionseg.server.repository.check import check_repository


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    target = tmp_path / "repo"
    shutil.copytree(SELFTEST_REPOSITORY, target)
    return target


def messages(repo: Path) -> list[str]:
    return [str(p) for p in check_repository(repo)]


def test_selftest_repository_is_clean(repo: Path) -> None:
    assert messages(repo) == []


def test_missing_and_not_a_directory(tmp_path: Path) -> None:
    assert messages(tmp_path / "nope") == [f"{tmp_path / 'nope'}: repository does not exist"]
    (tmp_path / "file").write_text("x")
    assert messages(tmp_path / "file") == [f"{tmp_path / 'file'}: repository is not a directory"]
    (tmp_path / "empty").mkdir()
    assert messages(tmp_path / "empty") == [f"{tmp_path / 'empty'}: repository holds no model"]


def test_every_problem_is_listed(repo: Path) -> None:
    # garbage pbtxt
    (repo / "selftest_sum" / "config.pbtxt").write_text("name: selftest_sum\ninput [ {{{ garbage")
    # name that does not match its folder, and a missing model.py
    text = (repo / "selftest_scale" / "config.pbtxt").read_text()
    (repo / "selftest_scale" / "config.pbtxt").write_text(text.replace('name: "selftest_scale"', 'name: "scale"'))
    (repo / "selftest_scale" / "1" / "model.py").unlink()
    # a folder without config
    (repo / "stray").mkdir()
    found = messages(repo)
    assert any(m.startswith("selftest_sum: invalid config.pbtxt:") and "1:" in m for m in found), found
    assert "selftest_scale: config name 'scale' does not match its folder" in found
    assert "selftest_scale: version 1 lacks model.py" in found
    assert "stray: no config.pbtxt" in found
    # the ensemble's second step now references a model whose config did not parse
    assert "selftest: step 2 (selftest_sum): model 'selftest_sum' is not in the repository" in found
    assert len(found) == 5, found


def test_ensemble_wiring_problems(repo: Path) -> None:
    path = repo / "selftest" / "config.pbtxt"
    text = path.read_text()
    text = text.replace('key: "X"\n      value: "X"', 'key: "INPUT"\n      value: "X"', 1)
    text = text.replace('value: "TOTAL"', 'value: "SUM"')
    path.write_text(text)
    # the sum model now takes FP64: its mapped tensor Y is FP32
    sum_cfg = repo / "selftest_sum" / "config.pbtxt"
    sum_cfg.write_text(sum_cfg.read_text().replace("TYPE_FP32", "TYPE_FP64", 1))
    found = messages(repo)
    assert "selftest: step 1 (selftest_scale): selftest_scale has no input 'INPUT'" in found
    assert "selftest: step 1 (selftest_scale): required input 'X' of selftest_scale is not mapped" in found
    assert ("selftest: step 2 (selftest_sum): tensor 'Y' is FP32 but selftest_sum input 'Y' is FP64") in found
    assert "selftest: ensemble output 'TOTAL' is produced by no step" in found


def test_ensemble_referencing_a_missing_model(repo: Path) -> None:
    shutil.rmtree(repo / "selftest_sum")
    assert messages(repo) == ["selftest: step 2 (selftest_sum): model 'selftest_sum' is not in the repository"]


def test_missing_version_folder(repo: Path) -> None:
    shutil.rmtree(repo / "selftest" / "1")
    assert messages(repo) == ["selftest: no numeric version folder (e.g. 1/)"]


def test_cli_exit_codes(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["repository", "check", str(repo)]) == 0
    assert "3 model(s), no problems found" in capsys.readouterr().out
    (repo / "selftest_sum" / "config.pbtxt").write_text("garbage {")
    assert main(["repository", "check", str(repo)]) == 1
    captured = capsys.readouterr()
    assert "selftest_sum: invalid config.pbtxt" in captured.out
    assert captured.err.strip().splitlines() == [f"lesionseg: error: {repo}: 2 problem(s) found"]
    assert main(["repository", "check", str(repo / "missing")]) == 1
    assert "repository does not exist" in capsys.readouterr().out
    assert main(["repository", "check"]) == 2
