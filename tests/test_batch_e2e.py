"""Batch mode and transports against the real embedded Triton server.

Masks of a cohort run must equal the single-image run's masks voxel for voxel, whatever the
transport; shared-memory regions must not outlive a run; a server restart mid-batch is survived.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from served import infer_task, legacy

from lesionseg.client.cli import main
from lesionseg.client.shm import leaked_regions
from lesionseg.client.transport import Transport, TransportSettings
from lesionseg.core.nifti import load_nifti

pytestmark = pytest.mark.server


def mask(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def server_regions(url: str) -> list:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        return list(client.get_system_shared_memory_status().regions)


def make_cohort(root: Path, source: Path, subjects: int, suffix: str = "T2star") -> Path:
    """A BIDS dataset of `subjects` copies of `source` (plus one T2w image the filters must skip)."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "cohort", "BIDSVersion": "1.8.0"}')
    for i in range(1, subjects + 1):
        folder = root / f"sub-{i:02d}" / "anat"
        folder.mkdir(parents=True)
        shutil.copy(source, folder / f"sub-{i:02d}_{suffix}.nii.gz")
    shutil.copy(source, root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    return root


@pytest.fixture(scope="module")
def t2s(shared: Path) -> Path:
    return shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"


@pytest.fixture(scope="module")
def t2s_reference(legacy_server, t2s: Path, tmp_path_factory) -> dict[str, np.ndarray]:
    """The single-image run's outputs over plain gRPC: the oracle every batch output must equal."""
    out = tmp_path_factory.mktemp("reference")
    result, outputs = legacy(legacy_server.settings.grpc_url, t2s, "t2s", ofolder=out, settings=TransportSettings(transport="grpc"))
    assert result.stats.total_voxels > 0
    files = {**outputs.masks, **outputs.maps}
    return {key: mask(files[key]) for key in ("lesion", "rpi_seg", "res_rpi_seg")}


@pytest.mark.parametrize("settings", [TransportSettings(transport="shm"), TransportSettings(transport="grpc"),
                                      TransportSettings(transport="grpc", compression="gzip")], ids=["shm", "grpc", "grpc-gzip"])
def test_transports_give_identical_outputs(legacy_server, nnunet_server, t2s: Path, t2s_reference, tmp_path: Path, settings):
    url = legacy_server.settings.grpc_url
    with Transport(url, settings) as transport:
        assert transport.kind == settings.transport
    result, outputs = legacy(url, t2s, "t2s", ofolder=tmp_path, settings=settings)
    seg, prob, _ = infer_task(url, load_nifti(t2s), "seg_ms_lesion", settings=settings)
    files = {**outputs.masks, **outputs.maps}
    for key, expected in t2s_reference.items():
        np.testing.assert_array_equal(mask(files[key]), expected)
    seg_ref, prob_ref, _ = infer_task(url, load_nifti(t2s), "seg_ms_lesion", settings=TransportSettings(transport="grpc"))
    np.testing.assert_array_equal(seg, seg_ref)
    np.testing.assert_array_equal(prob, prob_ref)
    assert leaked_regions([os.getpid()]) == [] and server_regions(url) == []


def test_auto_transport_uses_shared_memory_on_this_host(legacy_server):
    with Transport(legacy_server.settings.grpc_url) as transport:
        assert transport.kind == "shm"


def test_registrations_of_a_killed_client_are_cleared(legacy_server):
    """A region the server still maps whose /dev/shm file is gone (its client was killed between
    register and unregister) is unregistered by the next client; live regions are left alone."""
    import tritonclient.grpc as grpcclient
    import tritonclient.utils.shared_memory as shm

    url = legacy_server.settings.grpc_url
    live = shm.create_shared_memory_region("lesionseg_live", "/lesionseg_live", 64)
    dead = shm.create_shared_memory_region("lesionseg_0_0_dead", "/lesionseg_0_0_dead", 64)
    with grpcclient.InferenceServerClient(url) as client:
        client.register_system_shared_memory("lesionseg_live", "/lesionseg_live", 64)
        client.register_system_shared_memory("lesionseg_0_0_dead", "/lesionseg_0_0_dead", 64)
        shm.destroy_shared_memory_region(dead)  # the file goes, the server's registration stays
        try:
            assert sorted(server_regions(url)) == ["lesionseg_0_0_dead", "lesionseg_live"]
            with Transport(url, TransportSettings(transport="shm")):
                pass
            assert server_regions(url) == ["lesionseg_live"]
        finally:
            client.unregister_system_shared_memory("lesionseg_live")
            shm.destroy_shared_memory_region(live)
    assert server_regions(url) == []


def test_bids_cohort_resume_and_summary(legacy_server, t2s: Path, t2s_reference, tmp_path: Path, capsys):
    bids = make_cohort(tmp_path / "bids", t2s, 3)
    out = tmp_path / "derivatives"
    url = legacy_server.settings.grpc_url
    args = ["deepseg-lesion", "-i", str(bids), "--bids", "suffix=T2star", "-c", "t2s", "-ofolder", str(out), "-url", url,
            "-j", "2", "--summary", str(tmp_path / "summary.tsv")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "3 subjects: 3 ok, 0 skipped, 0 failed" in printed
    for i in (1, 2, 3):
        folder = out / f"sub-{i:02d}" / "anat"
        np.testing.assert_array_equal(mask(folder / f"sub-{i:02d}_T2star_lesionseg.nii.gz"), t2s_reference["lesion"])
        np.testing.assert_array_equal(mask(folder / f"sub-{i:02d}_T2star_RPI_seg.nii.gz"), t2s_reference["rpi_seg"])
        assert (folder / f"sub-{i:02d}_T2star_lesionseg_lesions.tsv").is_file()
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()}
    assert modes == {oct(0o666 & ~umask)}  # what plain open() gives, not mkstemp's 0600
    assert not list(out.rglob("*T2w*"))  # filtered out
    rows = (tmp_path / "summary.tsv").read_text().splitlines()
    assert len(rows) == 4 and all(r.split("\t")[1] == "ok" for r in rows[1:])

    # again without --resume/--overwrite: refused before anything runs
    assert main(args) == 2
    assert "output exists" in capsys.readouterr().err
    # --resume: nothing to do; then one damaged output makes only that subject run again
    assert main(args + ["--resume"]) == 0
    assert "3 subjects: 0 ok, 3 skipped, 0 failed" in capsys.readouterr().out
    damaged = out / "sub-02" / "anat" / "sub-02_T2star_RPI_seg.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:200])
    assert main(args + ["--resume"]) == 0
    assert "3 subjects: 1 ok, 2 skipped, 0 failed" in capsys.readouterr().out
    np.testing.assert_array_equal(mask(damaged), t2s_reference["rpi_seg"])
    assert leaked_regions([os.getpid()]) == [] and server_regions(url) == []


def test_batch_takes_each_subjects_cord_segmentation_from_bids_derivatives(legacy_server, shared: Path, t2s: Path,
                                                                         tmp_path: Path, capsys):
    """`-centerline file -file_centerline bids` in a batch: each subject's centerline is its cord
    segmentation in derivatives/labels; the run equals the single-image run with that file, and a
    subject without one fails with an error naming it while the others go on."""
    bids = make_cohort(tmp_path / "bids", t2s, 2)
    cord = shared / "sct_testing_data" / "t2s" / "t2s_seg.nii.gz"
    labels = bids / "derivatives" / "labels" / "sub-01" / "anat"
    labels.mkdir(parents=True)
    shutil.copy(cord, labels / "sub-01_T2star_seg.nii.gz")
    url = legacy_server.settings.grpc_url
    single = tmp_path / "single"
    assert main(["deepseg-lesion", "-i", str(t2s), "-c", "t2s", "-ofolder", str(single), "-url", url,
                 "-centerline", "file", "-file_centerline", str(cord)]) == 0
    out = tmp_path / "derivatives"
    code = main(["deepseg-lesion", "-i", str(bids), "--bids", "suffix=T2star", "-c", "t2s", "-ofolder", str(out),
                 "-url", url, "-centerline", "file", "-file_centerline", "bids"])
    captured = capsys.readouterr()
    assert code == 1
    assert "2 subjects: 1 ok, 0 skipped, 1 failed" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("lesionseg: error:")]
    assert errors == [f"lesionseg: error: sub-02/anat/sub-02_T2star.nii.gz: centerline file "
                      f"{bids / 'derivatives' / 'labels' / 'sub-02' / 'anat' / 'sub-02_T2star_seg.nii.gz'} does not exist "
                      "(from 'bids')"]
    for key in ("lesionseg.nii.gz", "RPI_seg.nii.gz", "res_RPI_seg.nii.gz"):
        np.testing.assert_array_equal(mask(out / "sub-01" / "anat" / f"sub-01_T2star_{key}"), mask(single / f"t2s_{key}"))
    assert not (out / "sub-02").exists()
    # the cord file changes the result: the CNN centerline's run differs from it somewhere
    cnn = tmp_path / "cnn"
    assert main(["deepseg-lesion", "-i", str(t2s), "-c", "t2s", "-ofolder", str(cnn), "-url", url]) == 0
    assert not np.array_equal(mask(cnn / "t2s_res_RPI_seg.nii.gz"), mask(single / "t2s_res_RPI_seg.nii.gz"))


def test_failed_subjects_do_not_stop_the_others(legacy_server, t2s: Path, tmp_path: Path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(t2s, folder / "a.nii.gz")
    (folder / "b.nii.gz").write_bytes(t2s.read_bytes()[:500])
    shutil.copy(t2s, folder / "c.nii.gz")
    out = tmp_path / "out"
    code = main(["deepseg-lesion", "-i", str(folder), str(tmp_path / "missing.nii.gz"), "-c", "t2s", "-ofolder", str(out),
                 "-url", legacy_server.settings.grpc_url])
    captured = capsys.readouterr()
    assert code == 1
    assert "4 subjects: 2 ok, 0 skipped, 2 failed" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("lesionseg: error:")]
    assert len(errors) == 2 and "b.nii.gz" in errors[0] + errors[1] and "missing.nii.gz" in errors[0] + errors[1]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}_{k}" for s in "ac" for k in ("lesionseg.nii.gz", "RPI_seg.nii.gz", "res_RPI_seg.nii.gz",
                                            "lesionseg_lesions.tsv", "lesionseg_lesions.json"))


def test_deepseg_batch_with_an_nnunet_task(nnunet_server, shared: Path, tmp_path: Path, capsys):
    image = shared / "sct_testing_data" / "t2" / "t2.nii.gz"
    for name in ("x", "y"):
        (tmp_path / "in").mkdir(exist_ok=True)
        shutil.copy(image, tmp_path / "in" / f"{name}.nii.gz")
    url = nnunet_server.settings.grpc_url
    assert main(["deepseg", "-i", str(tmp_path / "in" / "*.nii.gz"), "-task", "seg_ms_lesion", "-ofolder", str(tmp_path / "out"),
                 "-url", url, "--transport", "shm"]) == 0
    assert "2 subjects: 2 ok" in capsys.readouterr().out
    assert main(["deepseg", "-i", str(image), "-task", "seg_ms_lesion", "-o", str(tmp_path / "single.nii.gz"), "-url", url,
                 "--transport", "grpc"]) == 0
    # SCT 7's form, the task first: the same mask as SCT 6's -task; SCT 7's QC options name the entry
    qc = tmp_path / "qc"
    assert main(["deepseg", "seg_ms_lesion", "-i", str(image), "-o", str(tmp_path / "positional.nii.gz"), "-url", url,
                 "-qc", str(qc), "-qc-dataset", "cohort-a", "-qc-subject", "sub-07", "-qc-plane", "sagittal"]) == 0
    np.testing.assert_array_equal(mask(tmp_path / "positional.nii.gz"), mask(tmp_path / "single.nii.gz"))
    (record,) = [json.loads(p.read_text()) for p in (qc / "_json").glob("qc_*.json")]
    assert (record["dataset"], record["subject"], record["plane"]) == ("cohort-a", "sub-07", "Sagittal")
    assert [p.relative_to(qc).parts[:2] for p in qc.glob("*/*/*/*/*/overlay_img.png")] == [("cohort-a", "sub-07")]
    for name in ("x", "y"):
        np.testing.assert_array_equal(mask(tmp_path / "out" / f"{name}_lesion_seg.nii.gz"), mask(tmp_path / "single.nii.gz"))
        assert (tmp_path / "out" / f"{name}_lesion_seg.json").is_file()
    # -o names one file: refused with several inputs
    assert main(["deepseg", "-i", str(image), str(image), "-task", "seg_ms_lesion", "-o", str(tmp_path / "o.nii.gz"), "-url", url]) == 2


@pytest.mark.slow
def test_eight_concurrent_clients_ten_images_each(legacy_server, t2s: Path, t2s_reference, tmp_path: Path):
    url = legacy_server.settings.grpc_url
    cohorts = []
    for c in range(8):
        folder = tmp_path / f"client{c}"
        folder.mkdir()
        for i in range(10):
            shutil.copy(t2s, folder / f"c{c}_s{i}.nii.gz")
        cohorts.append(folder)
    clients = [subprocess.Popen([sys.executable, "-m", "lesionseg.client.cli", "deepseg-lesion", "-i", str(f), "-c", "t2s",
                                 "-ofolder", str(f.with_name(f.name + "_out")), "-url", url, "-j", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in cohorts]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(lambda p: p.communicate(timeout=600), clients))
    runs = [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(clients, outputs)]
    assert leaked_regions([p.pid for p in clients]) == [], [r.stderr for r in runs]
    for folder, run in zip(cohorts, runs):
        assert run.returncode == 0, run.stderr
        assert "10 subjects: 10 ok, 0 skipped, 0 failed" in run.stdout
        outputs = sorted(folder.with_name(folder.name + "_out").glob("*_lesionseg.nii.gz"))
        assert len(outputs) == 10
        for path in outputs:
            np.testing.assert_array_equal(mask(path), t2s_reference["lesion"])
    assert leaked_regions([os.getpid()]) == [] and server_regions(url) == []
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        assert client.is_server_ready() and client.is_model_ready("deepseg_lesion_t2s")


@pytest.mark.slow
def test_server_killed_and_restarted_mid_batch(session_repository: Path, legacy_server, t2s: Path, t2s_reference,
                                               tmp_path: Path):
    """A server of its own (only the t2s pipeline), killed with SIGKILL while the batch runs and started
    again on the same ports: the batch retries and finishes, every output complete and correct."""
    import threading

    from conftest import ports
    from waiting import group_members, wait_for

    from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings, port_in_use

    repo = tmp_path / "repo"
    repo.mkdir()
    for model in ("deepseg_lesion_t2s", "deepseg_lesion_t2s_net", "deepseg_ctr_t2s_net"):
        (repo / model).symlink_to(session_repository / model)
    settings = ServerSettings(repository=repo, startup_timeout=300, grace_period=5, **ports())
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        shutil.copy(t2s, folder / f"s{i:02d}.nii.gz")
    out = tmp_path / "out"
    first = EmbeddedServer(settings)
    first.start()
    first.wait_ready()
    batch = subprocess.Popen([sys.executable, "-m", "lesionseg.client.cli", "deepseg-lesion", "-i", str(folder), "-c", "t2s",
                              "-ofolder", str(out), "-url", settings.grpc_url, "-j", "2", "--retry-seconds", "240",
                              "--summary", str(tmp_path / "summary.tsv")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed: dict[str, list[str]] = {"stdout": [], "stderr": []}  # read line by line as it comes: stderr is watched

    def read(name: str) -> None:
        for line in getattr(batch, name):
            printed[name].append(line)

    readers = [threading.Thread(target=read, args=(name,), daemon=True) for name in printed]
    for reader in readers:
        reader.start()
    second = EmbeddedServer(settings)
    try:
        wait_for(lambda: len(list(out.glob("*_lesionseg.nii.gz"))) >= 2, 120, "the batch to write two subjects", interval=0.1)
        done_before = len(list(out.glob("*_lesionseg.nii.gz")))
        assert 2 <= done_before < 12, "the batch must be under way when the server dies"
        pgid, logged = first.pid, len(printed["stderr"])
        os.killpg(pgid, signal.SIGKILL)  # tritonserver and its Python-backend stubs: no clean shutdown
        first.stop()
        # the batch has met the dead server (a subject's request failed, so it will be retried),
        # and every process of the killed server is gone and its ports are free for the second
        wait_for(lambda: any("unavailable" in line for line in printed["stderr"][logged:]), 60,
                 "the batch to report the server unavailable", interval=0.05)
        wait_for(lambda: not group_members(pgid), 30, "the killed server's processes to be gone", interval=0.05)
        wait_for(lambda: not any(port_in_use(settings.host, port)
                                 for port in (settings.grpc_port, settings.http_port, settings.metrics_port)),
                 30, "the killed server's ports to be free", interval=0.05)
        second.start()
        second.wait_ready()
        batch.wait(timeout=400)
        for reader in readers:
            reader.join(timeout=30)
        stdout, stderr = ("".join(printed[name]) for name in ("stdout", "stderr"))
    finally:
        if batch.poll() is None:
            batch.kill()
        second.stop()
    assert batch.returncode == 0, stderr
    assert "12 subjects: 12 ok, 0 skipped, 0 failed" in stdout
    attempts = [int(row.split("\t")[3]) for row in (tmp_path / "summary.tsv").read_text().splitlines()[1:]]
    assert max(attempts) >= 2, "some subject must have been retried"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporary leftovers
    for i in range(12):
        np.testing.assert_array_equal(mask(out / f"s{i:02d}_lesionseg.nii.gz"), t2s_reference["lesion"])
        np.testing.assert_array_equal(mask(out / f"s{i:02d}_RPI_seg.nii.gz"), t2s_reference["rpi_seg"])
    assert leaked_regions([batch.pid]) == []
