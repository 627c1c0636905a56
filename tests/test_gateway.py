"""The PACS gateway against real peers: Orthanc pushes a series (C-STORE) and receives the SEG and SR
back (C-STORE and STOW-RS), dcmtk's storescu sends and storescp archives; faults: an unknown AE
title, a destination that is down, Triton down, the gateway SIGKILLed mid-study."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_data import decode_segment, sr_numbers, write
from pacs_peers import Forwarder, GatewayProcess, Orthanc, StoreSCP, free_port, storescu, wait_for

from lesionseg.client.cli import main
from lesionseg.client.dicom.series import read_series

pytestmark = [pytest.mark.server, pytest.mark.realdata, pytest.mark.slow,
              pytest.mark.skipif(any(shutil.which(b) is None for b in ("Orthanc", "storescu", "storescp", "echoscu")),
                                 reason="Orthanc and dcmtk not installed (Debian: apt-get install orthanc orthanc-dicomweb dcmtk)")]

STABLE_AGE = 1.5


@pytest.fixture(scope="module")
def gateway_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, gateway_port):
    pacs = Orthanc(tmp_path_factory.mktemp("orthanc"), {"lesionseg": ("LESIONSEG", "127.0.0.1", gateway_port)})
    yield pacs
    pacs.stop()


@pytest.fixture(scope="module")
def series(shared, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gateway_series")
    folders = {"axial": write(shared, "axial", root / "axial", description="T2star axial")}
    for k in range(3):  # one study of three sagittal series, 52 instances each
        folders[f"study{k}"] = write(shared, "sagittal", root / f"study{k}", seed=f"study-{k}", description=f"T2w study {k}",
                                     study_uid="2.25.9000", patient_id="P9000", series_number=k + 1)
    folders["sagittal"] = write(shared, "sagittal", root / "sagittal")
    return folders


def write_config(path: Path, *, port: int, url: str, destinations: str, spool: Path | None = None, routes: str = "") -> Path:
    path.write_text(f"""
[gateway]
ae_title = "LESIONSEG"
host = "127.0.0.1"
port = {port}
spool = "{spool or path.parent / 'spool'}"
stable_age = {STABLE_AGE}
min_free_mb = 1
url = "{url}"
retry_first = 0.5
retry_max = 2.0

[callers]
ORTHANC = ["127.0.0.1"]
STORESCU = []

{routes}
[[routes]]
name = "study"
series_description = "(?i)t2w study"
contrast = "t2"

[[routes]]
name = "t2star axial"
series_description = "(?i)t2star"
orientation = "axial"
contrast = "t2s"

[[routes]]
name = "sagittal T2w"
orientation = "sagittal"
action = "ignore"
{destinations}
""")
    return path


def cstore(name: str, aet: str, port: int) -> str:
    return f'\n[[destinations]]\nname = "{name}"\nkind = "cstore"\nae_title = "{aet}"\nhost = "127.0.0.1"\nport = {port}\n'


@contextlib.contextmanager
def gateway_to_archive(tmp_path: Path, port: int, url: str, *, routes: str = ""):
    """A gateway process sending to a storescp archive (both started); yields (gateway, archive)."""
    archive = StoreSCP(tmp_path / "archive").start()
    config = write_config(tmp_path / "gateway.toml", port=port, url=url, routes=routes,
                          destinations=cstore("archive", "ARCHIVE", archive.port))
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start(port)
    try:
        yield gateway, archive
    finally:
        gateway.stop()
        archive.stop()


def jobs(spool: Path) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(str(spool / "journal.sqlite")) as db:
        return {uid: (state, reason) for uid, state, reason in db.execute("SELECT uid, state, reason FROM series")}


def deliveries(spool: Path, uids: set[str]) -> list[tuple[str, str, str, int]]:
    """The journal's deliveries of series `uids`: (series, destination, state, failed attempts)."""
    with sqlite3.connect(str(spool / "journal.sqlite")) as db:
        rows = db.execute("SELECT series_uid, destination, state, attempts FROM deliveries")
        return sorted(row for row in rows if row[0] in uids)


def all_delivered(spool: Path, uids: set[str], destinations: set[str]) -> bool:
    """Every series of `uids` is `sent` and the journal holds nothing left to send for it: each of
    its results is recorded as delivered to each of `destinations`, so no retry is scheduled and
    the gateway sends none of them again (a `sent` delivery never is)."""
    states = jobs(spool)
    if not all(states.get(uid, ("",))[0] == "sent" for uid in uids):
        return False
    rows = deliveries(spool, uids)
    return ({(uid, name) for uid, name, _, _ in rows} == {(uid, name) for uid in uids for name in destinations}
            and all(state == "sent" for _, _, state, _ in rows))


def nifti_mask(folder: Path, where: Path, url: str) -> np.ndarray:
    """The NIfTI path's lesion mask of the same image (its dicom2nifti conversion)."""
    image = where / f"{folder.name}.nii.gz"
    assert main(["dicom2nifti", "-i", str(folder), "-o", str(image), "--overwrite"]) == 0
    assert main(["deepseg-lesion", "-i", str(image), "-c", "t2s", "-ofolder", str(where), "-url", url, "--overwrite"]) == 0
    return np.asanyarray(nib.load(str(where / f"{folder.name}_lesionseg.nii.gz")).dataobj)


def test_orthanc_push_segment_send_back(legacy_server, orthanc, series, gateway_port, tmp_path, capsys):
    """Orthanc sends a series to the gateway; the SEG and SR come back to Orthanc over C-STORE and
    STOW-RS; the SEG references the source series and decodes to the NIfTI path's mask."""
    url = legacy_server.settings.grpc_url
    destinations = cstore("orthanc", "ORTHANC", orthanc.dicom_port)
    if Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so").exists():
        destinations += f'\n[[destinations]]\nname = "orthanc-web"\nkind = "stowrs"\nurl = "{orthanc.url}/dicom-web"\n'
    config = write_config(tmp_path / "gateway.toml", port=gateway_port, url=url, destinations=destinations)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start(gateway_port)
    try:
        source_id = orthanc.upload(series["axial"])
        orthanc.request("POST", "/modalities/lesionseg/store", {"Resources": [source_id], "Synchronous": True})
        source_uid = read_series(series["axial"]).series_uid
        wait_for(lambda: jobs(tmp_path / "spool").get(source_uid, ("",))[0] == "sent", 120, "the series to be sent")
        # the results in the source's study (Orthanc is shared by the module's tests, in any order)
        study = orthanc.get(f"/series/{source_id}")["ParentStudy"]
        segs = [s for s in orthanc.series_with_modality("SEG") if s["ParentStudy"] == study]
        srs = [s for s in orthanc.series_with_modality("SR") if s["ParentStudy"] == study]
        assert len(segs) == 1 and len(srs) == 1
        seg_file = tmp_path / "seg.dcm"
        seg_file.write_bytes(orthanc.instance_file(segs[0]["Instances"][0]))
        seg = pydicom.dcmread(str(seg_file))
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source_uid
        reference = nifti_mask(series["axial"], tmp_path / "nifti", url)
        assert reference.any()
        assert np.array_equal(decode_segment(seg_file, read_series(series["axial"]), "multiple sclerosis lesion"), reference)
        sr = tmp_path / "sr.dcm"
        sr.write_bytes(orthanc.instance_file(srs[0]["Instances"][0]))
        assert sr_numbers(sr)["count"] >= 1
    finally:
        assert gateway.stop() == 0
    assert "stopped" in gateway.text()
    capsys.readouterr()
    assert main(["gateway", "status", "--config", str(config)]) == 0
    listed = capsys.readouterr().out
    assert source_uid in listed and " sent " in listed


def test_unknown_ae_refused_then_known_ae_stored_and_ignored_route(legacy_server, series, gateway_port, tmp_path):
    config = write_config(tmp_path / "gateway.toml", port=gateway_port, url=legacy_server.settings.grpc_url, destinations="")
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start(gateway_port)
    try:
        refused = storescu(series["sagittal"], gateway_port, calling="INTRUDER")
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
        wait_for(lambda: "calling AE title 'INTRUDER' from 127.0.0.1 is not in [callers]" in gateway.text(), 10, "the refusal line")
        assert not (tmp_path / "spool" / "instances").exists() or not any((tmp_path / "spool" / "instances").iterdir())
        wrong_called = storescu(series["sagittal"], gateway_port, called="SOMEONE")
        assert wrong_called.returncode != 0 and "Called AE Title Not Recognized" in wrong_called.stdout + wrong_called.stderr
        done = storescu(series["sagittal"], gateway_port)
        assert done.returncode == 0, done.stderr
        uid = read_series(series["sagittal"]).series_uid
        wait_for(lambda: jobs(tmp_path / "spool").get(uid, ("",))[0] == "ignored", 30, "the sagittal series to be ignored")
        assert "ignores it" in jobs(tmp_path / "spool")[uid][1]
        assert len(list((tmp_path / "spool" / "instances").rglob("*.dcm"))) == len(list(series["sagittal"].glob("*.dcm")))
    finally:
        assert gateway.stop() == 0


def test_destination_down_then_back(legacy_server, series, gateway_port, tmp_path):
    """Results wait while the archive is down and are sent once when it comes back."""
    archive = StoreSCP(tmp_path / "archive")
    config = write_config(tmp_path / "gateway.toml", port=gateway_port, url=legacy_server.settings.grpc_url,
                          destinations=cstore("archive", "ARCHIVE", archive.port))
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start(gateway_port)
    try:
        assert storescu(series["axial"], gateway_port).returncode == 0
        uid = read_series(series["axial"]).series_uid
        wait_for(lambda: jobs(tmp_path / "spool").get(uid, ("",))[0] == "sending" and "archive" in jobs(tmp_path / "spool")[uid][1],
                 120, "a failed delivery to be recorded")
        assert "unreachable" in jobs(tmp_path / "spool")[uid][1]
        archive.start()
        wait_for(lambda: all_delivered(tmp_path / "spool", {uid}, {"archive"}), 60,
                 "the results to be sent after the archive came back")
        # the journal has nothing left to send and the archive acknowledged each object after
        # storing it, so what it holds now is all it will ever get of this series
        assert all(attempts >= 1 for *_, attempts in deliveries(tmp_path / "spool", {uid})), "no failed attempt was recorded"
        modalities = sorted(pydicom.dcmread(str(p), stop_before_pixels=True).Modality for p in archive.files())
        assert modalities == ["SEG", "SR"]  # sent once: the failed attempts stored nothing, the retry stored each once
    finally:
        gateway.stop()
        archive.stop()


def test_triton_down_jobs_wait_then_run(legacy_server, series, gateway_port, tmp_path):
    triton = Forwarder(("127.0.0.1", legacy_server.settings.grpc_port))
    try:
        with gateway_to_archive(tmp_path, gateway_port, f"127.0.0.1:{triton.port}") as (gateway, archive):
            assert storescu(series["axial"], gateway_port).returncode == 0
            uid = read_series(series["axial"]).series_uid
            wait_for(lambda: "waiting" in jobs(tmp_path / "spool").get(uid, ("", ""))[1], 60, "the job to wait for Triton")
            assert jobs(tmp_path / "spool")[uid][0] == "queued"
            triton.start()
            wait_for(lambda: jobs(tmp_path / "spool")[uid][0] == "sent", 120, "the job to run once Triton is back")
            assert len(archive.files()) == 2
    finally:
        triton.stop()


def test_sigkill_mid_study_loses_nothing_and_sends_once(legacy_server, orthanc, series, gateway_port, tmp_path):
    """SIGKILL while a study is arriving: every acknowledged instance is in the spool; after the
    restart and a resend, each series is segmented and sent exactly once: storescp -uf keeps every
    copy it receives (one SEG and one SR per series), and Orthanc holds one SEG per series."""
    archive = StoreSCP(tmp_path / "archive").start()
    config = write_config(tmp_path / "gateway.toml", port=gateway_port, url=legacy_server.settings.grpc_url,
                          destinations=cstore("archive", "ARCHIVE", archive.port) + cstore("orthanc", "ORTHANC", orthanc.dicom_port))
    study = tmp_path / "study"
    study.mkdir()
    for k in range(3):
        shutil.copytree(series[f"study{k}"], study / f"s{k}")
    total = len(list(study.rglob("*.dcm")))
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start(gateway_port)
    import subprocess

    sender = subprocess.Popen(["storescu", "-v", "+sd", "+r", "-aet", "STORESCU", "-aec", "LESIONSEG", "127.0.0.1",
                               str(gateway_port), str(study)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    instances = tmp_path / "spool" / "instances"
    wait_for(lambda: instances.exists() and len(list(instances.rglob("*.dcm"))) >= 5, 60, "some instances in the spool", interval=0.005)
    gateway.kill()
    log = sender.communicate(timeout=60)[0]
    acknowledged = log.count("Received Store Response (Success)")
    spooled = list(instances.rglob("*.dcm"))
    # killed mid-study and nothing acknowledged lost. storescu sends one instance at a time, so
    # at most the last spooled one can lack its C-STORE response (killed between spooling it and
    # answering)
    assert 4 <= len(spooled) - 1 <= acknowledged <= len(spooled) < total, (acknowledged, len(spooled), total)
    for path in spooled:
        pydicom.dcmread(str(path))  # complete files only
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start(gateway_port)
    try:
        assert storescu(study, gateway_port).returncode == 0  # the modality sends the study again
        uids = {read_series(study / f"s{k}").series_uid for k in range(3)}
        # storescu has returned, so every instance is recorded (each before its C-STORE response):
        # no series can be reopened any more, and once the journal has nothing left to send, the
        # archive and Orthanc (each answers a C-STORE after storing) hold all they will ever get
        wait_for(lambda: all_delivered(tmp_path / "spool", uids, {"archive", "orthanc"}), 180,
                 "every series to be sent to both destinations")
        received = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in archive.files()]
        def source(ds) -> str:
            refs = ds.ReferencedSeriesSequence if ds.Modality == "SEG" else [
                r for study_ref in ds.CurrentRequestedProcedureEvidenceSequence for r in study_ref.ReferencedSeriesSequence]
            return next(r.SeriesInstanceUID for r in refs if r.SeriesInstanceUID in uids)

        per_series = sorted((source(ds), ds.Modality) for ds in received)
        assert [m for _, m in per_series] == ["SEG", "SR"] * 3
        assert {u for u, _ in per_series} == uids
        assert len(list(instances.rglob("*.dcm"))) == total
        studies = [st for st in orthanc.get("/studies?expand") if st["MainDicomTags"].get("StudyInstanceUID") == "2.25.9000"]
        modalities = sorted(orthanc.get(f"/series/{sid}")["MainDicomTags"]["Modality"] for sid in studies[0]["Series"])
        assert modalities == ["SEG"] * 3 + ["SR"] * 3  # Orthanc holds one SEG and one SR per series (it was sent no source)
    finally:
        gateway.stop()
        archive.stop()


def test_task_route_with_cord_segment(nnunet_server, series, gateway_port, tmp_path):
    """A route to an sct_deepseg task with a cord task: the SEG's lesion and cord segments are the
    masks `deepseg` writes for the converted image with each task."""
    url = nnunet_server.settings.grpc_url
    route = ('[[routes]]\nname = "nnunet"\nseries_description = "(?i)t2w sagittal"\ntask = "seg_ms_lesion"\n'
             'cord_task = "seg_sc_contrast_agnostic"\n')
    with gateway_to_archive(tmp_path, gateway_port, url, routes=route) as (gateway, archive):
        assert storescu(series["sagittal"], gateway_port).returncode == 0
        source = read_series(series["sagittal"])
        wait_for(lambda: jobs(tmp_path / "spool").get(source.series_uid, ("",))[0] == "sent", 180, "the series to be sent")
    (seg_file,) = [p for p in archive.files() if pydicom.dcmread(str(p), stop_before_pixels=True).Modality == "SEG"]
    image = tmp_path / "sagittal.nii.gz"
    assert main(["dicom2nifti", "-i", str(series["sagittal"]), "-o", str(image)]) == 0
    for task, label, out in (("seg_ms_lesion", "multiple sclerosis lesion", "lesion.nii.gz"),
                             ("seg_sc_contrast_agnostic", "spinal cord", "cord.nii.gz")):
        assert main(["deepseg", "-i", str(image), "-task", task, "-o", str(tmp_path / out), "-url", url]) == 0
        expected = np.asanyarray(nib.load(str(tmp_path / out)).dataobj)
        assert np.array_equal(decode_segment(seg_file, source, label), expected), label


def test_route_with_scts_6_name_runs_scts_7_task(nnunet_server, series, gateway_port, tmp_path, shared):
    """A route written with SCT 6's name (seg_ms_lesion_mp2rage) on a server that serves only SCT
    7's (lesion_ms_mp2rage): its series are segmented by SCT 7's task, the SEG's lesion segment is
    `deepseg lesion_ms_mp2rage`'s mask, and the log says so once for the route, not once per series."""
    url = nnunet_server.settings.grpc_url
    import tritonclient.grpc as grpcclient

    served = {m.name for m in grpcclient.InferenceServerClient(url).get_model_repository_index().models}
    assert "lesion_ms_mp2rage" in served and "seg_ms_lesion_mp2rage" not in served
    second = write(shared, "sagittal", tmp_path / "sagittal2", seed="sagittal-2")
    route = ('[[routes]]\nname = "old name"\nseries_description = "(?i)t2w sagittal"\ntask = "seg_ms_lesion_mp2rage"\n'
             'cord_task = "seg_sc_contrast_agnostic"\n')
    with gateway_to_archive(tmp_path, gateway_port, url, routes=route) as (gateway, archive):
        for folder in (series["sagittal"], second):
            assert storescu(folder, gateway_port).returncode == 0
        uids = {read_series(folder).series_uid for folder in (series["sagittal"], second)}
        wait_for(lambda: all(jobs(tmp_path / "spool").get(uid, ("",))[0] == "sent" for uid in uids), 240, "both series to be sent")
        log = gateway.text()
    note = "seg_ms_lesion_mp2rage is SCT 6's name of lesion_ms_mp2rage (SCT 7): using lesion_ms_mp2rage"
    assert log.count(note) == 1, log[-3000:]
    assert "seg_sc_contrast_agnostic is SCT 6's name" not in log  # served under its old name: that model runs
    source = read_series(series["sagittal"])
    heads = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in archive.files()]
    (seg_file,) = [p for p, head in zip(archive.files(), heads) if head.Modality == "SEG"
                   and head.ReferencedSeriesSequence[0].SeriesInstanceUID == source.series_uid]
    image = tmp_path / "sagittal.nii.gz"
    assert main(["dicom2nifti", "-i", str(series["sagittal"]), "-o", str(image)]) == 0
    assert main(["deepseg", "lesion_ms_mp2rage", "-i", str(image), "-o", str(tmp_path / "lesion.nii.gz"), "-url", url]) == 0
    expected = np.asanyarray(nib.load(str(tmp_path / "lesion.nii.gz")).dataobj)
    assert expected.any()
    assert np.array_equal(decode_segment(seg_file, source, "multiple sclerosis lesion"), expected)


def test_gateway_spreads_over_servers_and_skips_a_dead_one(legacy_server, series, gateway_port, tmp_path):
    """`url` with two servers, one of them down: every series is segmented on the live one."""
    url = f"127.0.0.1:{free_port()},{legacy_server.settings.grpc_url}"
    with gateway_to_archive(tmp_path, gateway_port, url) as (gateway, archive):
        assert storescu(series["axial"], gateway_port).returncode == 0
        uid = read_series(series["axial"]).series_uid
        wait_for(lambda: jobs(tmp_path / "spool").get(uid, ("",))[0] == "sent", 120, "the series to be sent")
        assert len(archive.files()) == 2
