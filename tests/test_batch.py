"""Batch mode without a server: input discovery (paths, globs, folders, BIDS filters), the output
checks made before any work, --resume's validity rule, retries and exit codes of the runner."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionseg.client.address import is_local_address
from lesionseg.client.batch.inputs import Subject, collect_inputs, entities, is_batch, parse_bids_filters
from lesionseg.client.batch.runner import (
    FAILED,
    OK,
    SKIPPED,
    BatchOptions,
    Planned,
    check_outputs,
    exit_code,
    outputs_valid,
    run_subjects,
    summary_table,
    write_summary_tsv,
)
from lesionseg.client.result import Outputs
from lesionseg.client.transport import TransportSettings
from lesionseg.core.errors import InputError, ServerUnavailableError, UsageError


def nifti(path: Path, shape=(4, 5, 6), dtype=np.float32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones(shape, dtype), np.eye(4)), str(path))
    return path


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    (root / "derivatives" / "sub-01" / "anat").mkdir(parents=True)
    root.joinpath("dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.8.0"}')
    for sub, ses, suffix in [("01", None, "T2w"), ("01", None, "T2star"), ("02", "M0", "T2w"), ("02", "M12", "T2w"),
                             ("03", None, "T2star")]:
        folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
        name = f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + f"_{suffix}.nii.gz"
        nifti(folder / name)
    nifti(root / "sub-01" / "anat" / "sub-01_T2w_seg.nii.gz")  # an earlier output, never an input
    nifti(root / "derivatives" / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    return root


def names(images: list[Subject]) -> list[str]:
    return [i.path.name for i in images]


def test_bids_dataset_all_anatomical_images(bids: Path):
    found = collect_inputs([bids])
    assert names(found) == ["sub-01_T2star.nii.gz", "sub-01_T2w.nii.gz", "sub-03_T2star.nii.gz",
                            "sub-02_ses-M0_T2w.nii.gz", "sub-02_ses-M12_T2w.nii.gz"]
    assert found[3].relative == Path("sub-02/ses-M0/anat")


@pytest.mark.parametrize("filters, expected", [
    (["suffix=T2w"], ["sub-01_T2w.nii.gz", "sub-02_ses-M0_T2w.nii.gz", "sub-02_ses-M12_T2w.nii.gz"]),
    (["sub=01,03", "suffix=T2star"], ["sub-01_T2star.nii.gz", "sub-03_T2star.nii.gz"]),
    (["sub=sub-02", "ses=M12"], ["sub-02_ses-M12_T2w.nii.gz"]),
])
def test_bids_filters(bids: Path, filters, expected):
    assert names(collect_inputs([bids], bids=filters)) == expected


def test_bids_filter_matching_nothing_is_a_usage_error(bids: Path):
    with pytest.raises(UsageError, match="no NIfTI image found"):
        collect_inputs([bids], bids=["suffix=FLAIR"])


@pytest.mark.parametrize("bad", ["sub", "=01", "sub=", "su b=01"])
def test_bad_bids_filters(bad: str):
    with pytest.raises(UsageError, match="ENTITY=VALUE"):
        parse_bids_filters([bad])


def test_entities():
    assert entities(Path("sub-01_ses-M0_acq-sag_run-2_T2w.nii.gz")) == {
        "sub": "01", "ses": "M0", "acq": "sag", "run": "2", "suffix": "T2w"}


def test_plain_folder_glob_and_paths(tmp_path: Path):
    a = nifti(tmp_path / "in" / "a.nii.gz")
    b = nifti(tmp_path / "in" / "deep" / "b.nii")
    nifti(tmp_path / "in" / "a_lesionseg.nii.gz")
    nifti(tmp_path / "in" / ".hidden" / "c.nii.gz")
    (tmp_path / "in" / "notes.txt").write_text("x")
    assert names(collect_inputs([tmp_path / "in"])) == ["a.nii.gz", "b.nii"]
    assert names(collect_inputs([str(tmp_path / "in" / "**" / "*.nii*")])) == ["a.nii.gz", "a_lesionseg.nii.gz", "b.nii"]
    # an explicit path is kept even when missing (its subject fails, the others run); duplicates once
    missing = tmp_path / "missing.nii.gz"
    assert [i.path for i in collect_inputs([a, str(a), missing, b])] == [a, missing, b]
    with pytest.raises(UsageError, match="matches no NIfTI image"):
        collect_inputs([str(tmp_path / "*.nii.gz")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="folder .*empty: no NIfTI image found"):
        collect_inputs([empty])


def test_is_batch(tmp_path: Path):
    one = nifti(tmp_path / "a.nii.gz")
    assert not is_batch([str(one)], None)
    assert not is_batch([str(tmp_path / "missing.nii.gz")], None)
    assert is_batch([str(one), str(one)], None)
    assert is_batch([str(tmp_path)], None)
    assert is_batch([str(tmp_path / "*.nii.gz")], None)
    assert is_batch([str(one)], [])


def subject(tmp_path: Path, name: str) -> Planned:
    image = nifti(tmp_path / "in" / f"{name}.nii.gz")
    mask = tmp_path / "out" / f"{name}_seg.nii.gz"
    return Planned(subject=Subject(path=image), outputs=Outputs(masks={"seg": mask}, named={"seg": mask}, generated_by=True))


def finish(s: Planned) -> str:
    for path in s.outputs.grid_files:
        nifti(path, dtype=np.uint8)
    for path in s.files:
        if path.suffix == ".json":
            path.write_text("{}")
    return "done"


def test_check_outputs_refuses_existing_and_clashing(tmp_path: Path):
    a, b = subject(tmp_path, "a"), subject(tmp_path, "b")
    check_outputs([a, b], BatchOptions())
    finish(b)
    with pytest.raises(UsageError, match=r"b_seg.nii.gz: output exists \(2 existing output files\); use --resume"):
        check_outputs([a, b], BatchOptions())
    check_outputs([a, b], BatchOptions(resume=True))
    check_outputs([a, b], BatchOptions(overwrite=True))
    twin = Planned(subject=Subject(path=nifti(tmp_path / "other" / "a.nii.gz")), outputs=a.outputs)
    with pytest.raises(UsageError, match="would both write"):
        check_outputs([a, twin], BatchOptions(overwrite=True))


def test_options_checked_and_resolved_from_environment(monkeypatch):
    with pytest.raises(UsageError, match="--jobs 0"):
        BatchOptions(in_flight=0)
    with pytest.raises(UsageError, match="give one"):
        BatchOptions(resume=True, overwrite=True)
    monkeypatch.setenv("LESIONSEG_JOBS", "6")
    monkeypatch.setenv("LESIONSEG_RETRY_SECONDS", "7.5")
    assert BatchOptions.resolve() == BatchOptions(in_flight=6, retry_seconds=7.5)
    assert BatchOptions.resolve(in_flight=3).in_flight == 3
    monkeypatch.setenv("LESIONSEG_JOBS", "many")
    with pytest.raises(UsageError, match="LESIONSEG_JOBS"):
        BatchOptions.resolve()


def test_outputs_valid(tmp_path: Path):
    s = subject(tmp_path, "a")
    assert "missing" in outputs_valid(s)
    finish(s)
    assert outputs_valid(s) is None
    seg = s.outputs.grid_files[0]
    seg.write_bytes(seg.read_bytes()[:60])  # truncated (a crash of another tool mid-write)
    assert "unreadable" in outputs_valid(s)
    nifti(seg, shape=(4, 5, 7))
    assert "shape" in outputs_valid(s)
    finish(s)
    later = time.time() + 10
    os.utime(s.subject.path, (later, later))  # the input changed after the outputs were written
    assert "older than its input" in outputs_valid(s)


def test_run_subjects_resume_failures_and_order(tmp_path: Path):
    subjects = [subject(tmp_path, n) for n in "abcde"]
    finish(subjects[1])

    def work(s: Planned) -> str:
        if s.subject.path.name.startswith("c"):
            raise InputError(f"{s.subject.path}: broken")
        if s.subject.path.name.startswith("d"):
            raise RuntimeError("a bug")
        return finish(s)

    outcomes = run_subjects(subjects, work, options=BatchOptions(in_flight=3, resume=True))
    assert [o.status for o in outcomes] == [OK, SKIPPED, FAILED, FAILED, OK]
    assert outcomes[2].note.endswith("c.nii.gz: broken")
    assert "RuntimeError: a bug" in outcomes[3].note
    assert exit_code(outcomes) == 1
    assert exit_code(outcomes[:2]) == 0
    table = summary_table(outcomes, 2.0)
    assert "5 subjects: 2 ok, 1 skipped, 2 failed in 2.0 s (60.0 subjects/min)" in table
    tsv = write_summary_tsv(outcomes, tmp_path / "summary.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["image", "status", "seconds", "attempts", "result", "outputs", "server"]
    assert len(tsv) == 6 and tsv[3].split("\t")[1] == FAILED


def test_jobs_bound_the_subjects_in_flight(tmp_path: Path):
    subjects = [subject(tmp_path, f"s{i}") for i in range(8)]
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def work(s: Planned) -> str:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return finish(s)

    outcomes = run_subjects(subjects, work, options=BatchOptions(in_flight=3))
    assert all(o.status == OK for o in outcomes)
    assert state["max"] == 3


def test_unavailable_server_is_waited_for_and_retried(tmp_path: Path):
    s = subject(tmp_path, "a")
    calls = {"work": 0, "wait": 0}

    def work(x: Planned) -> str:
        calls["work"] += 1
        if calls["work"] < 3:
            raise ServerUnavailableError("gone")
        return finish(x)

    def wait_ready(timeout: float) -> bool:
        calls["wait"] += 1
        return True

    (outcome,) = run_subjects([s], work, options=BatchOptions(retry_seconds=30), wait_ready=wait_ready)
    assert (outcome.status, outcome.attempts, calls["wait"]) == (OK, 3, 2)
    # a server that never comes back: the subject fails as "unavailable", exit code 3
    (outcome,) = run_subjects([subject(tmp_path, "b")], lambda x: (_ for _ in ()).throw(ServerUnavailableError("gone")),
                           options=BatchOptions(retry_seconds=5), wait_ready=lambda timeout: False)
    assert outcome.status == FAILED and outcome.unavailable
    assert exit_code([outcome]) == 3


def test_transport_settings(monkeypatch):
    assert TransportSettings.resolve() == TransportSettings(transport="auto", compression="none")
    monkeypatch.setenv("LESIONSEG_TRANSPORT", "grpc")
    monkeypatch.setenv("LESIONSEG_COMPRESSION", "gzip")
    assert TransportSettings.resolve() == TransportSettings(transport="grpc", compression="gzip")
    assert TransportSettings.resolve(transport="shm").transport == "shm"
    with pytest.raises(UsageError, match="transport 'tcp'"):
        TransportSettings(transport="tcp")
    with pytest.raises(UsageError, match="compression 'zip'"):
        TransportSettings(compression="zip")


@pytest.mark.parametrize("address, local", [
    ("127.0.0.1:8001", True), ("localhost:8001", True), ("[::1]:8001", True),
    ("192.0.2.10:8001", False), ("triton.invalid:8001", False),
])
def test_is_local_address(address: str, local: bool):
    assert is_local_address(address) is local
