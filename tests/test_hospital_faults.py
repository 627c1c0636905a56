"""The gateway under bad input and faults, as a hospital's integration test or an attacker would try
it (issue 23): each finding is a test against the real gateway process and real dcmtk peers.

No Triton is needed to receive: the gateway's `url` points at a port nobody listens on, so its
series wait for a server while the tests look at what was acknowledged, stored and journalled.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pacs_peers import GatewayProcess, free_port

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(any(shutil.which(b) is None for b in ("storescu", "echoscu")),
                                 reason="dcmtk not installed (Debian: apt-get install dcmtk)")]

#: a UID root for the test instances (2.25: UUID-derived, conformant)
ROOT = "2.25.4242424242"


def config(folder: Path, port: int, extra: str = "") -> Path:
    path = folder / "gateway.toml"
    path.write_text(f"""
[gateway]
ae_title = "LESIONSEG"
host = "127.0.0.1"
port = {port}
spool = "{folder / 'spool'}"
stable_age = 600
min_free_mb = 1
url = "127.0.0.1:{free_port()}"
{extra}
[callers]
STORESCU = []
""")
    return path


@pytest.fixture
def gateway(tmp_path: Path, request: pytest.FixtureRequest):
    """A gateway process with nothing to segment on (its series stay `received`); yields (gateway,
    port, spool). A test's `gateway_keys` marker adds [gateway] keys."""
    port = free_port()
    marker = request.node.get_closest_marker("gateway_keys")
    running = GatewayProcess(config(tmp_path, port, marker.args[0] if marker else ""), tmp_path / "gateway.log").start(port)
    try:
        yield running, port, tmp_path / "spool"
    finally:
        running.stop()


def instance(path: Path, *, sop_uid: str, series_uid: str, study_uid: str, patient_id: str, pixels: int, size: int = 8) -> Path:
    """A small MR image (`size` x `size`, uint16, every pixel `pixels`) with the given identity, as a Part 10 file."""
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = pydicom.uid.MRImageStorage, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, study_uid + ".1"
    ds.PatientID, ds.PatientName, ds.Modality, ds.SeriesDescription = patient_id, f"Patient^{patient_id}", "MR", "T2w sagittal"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelData = np.full((size, size), pixels, np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def journal(spool: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(str(spool / "journal.sqlite")) as db:
        return list(db.execute(sql))


def stored_files(spool: Path) -> list[Path]:
    return sorted(p for p in (spool / "instances").rglob("*.dcm"))


def store(files: list[Path], port: int) -> list[str]:
    """storescu with each file given (so their order is the list's), not halting at a failure:
    the status of each C-STORE response, as dcmtk names it ("Success", "Error: CannotUnderstand", ...)."""
    done = subprocess.run(["storescu", "-v", "--no-halt", "-aet", "STORESCU", "-aec", "LESIONSEG", "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=120)
    statuses = re.findall(r"Received Store Response \((.*)\)", done.stdout + done.stderr)
    assert len(statuses) == len(files), done.stdout + done.stderr
    return statuses


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")  # pydicom, writing the over-long UIDs
def test_long_uids_sharing_a_prefix_are_never_acknowledged_into_one_file(gateway, tmp_path: Path) -> None:
    """Finding 1: nine instances of nine patients whose SOP Instance and Series UIDs are 70
    characters long (over DICOM's 64) and share their first 64. storescu sends each request's
    AffectedSOPInstanceUID cut to 64 characters. None may be acknowledged and then lost or mixed:
    each is either stored under its own full UID, or refused before it is acknowledged. lesionseg
    refuses them (receiver.py says why); a tenth instance with a conformant UID is stored."""
    gateway_process, port, spool = gateway
    prefix = (ROOT + ".1" * 40)[:64]  # ends with a digit
    files = [instance(tmp_path / "in" / f"{k}.dcm", sop_uid=f"{prefix}.{k}0000", series_uid=f"{prefix}.{k}1111",
                      study_uid=f"{ROOT}.{k}", patient_id=f"P{k}", pixels=100 + k) for k in range(9)]
    assert all(len(pydicom.dcmread(f).SOPInstanceUID) == 70 for f in files)
    files.append(instance(tmp_path / "in" / "9.dcm", sop_uid=f"{ROOT}.9.1", series_uid=f"{ROOT}.9", study_uid=f"{ROOT}.99",
                          patient_id="P9", pixels=109))
    statuses = store(files, port)
    acknowledged = statuses.count("Success")
    rows = journal(spool, "SELECT sop_uid, series_uid, path FROM instances")
    # whatever was acknowledged is in the journal under its own full UID, in its own file, with its own pixels
    assert len(rows) == acknowledged
    assert len({r[0] for r in rows}) == len(rows) and len({r[2] for r in rows}) == len(rows)
    for sop_uid, series_uid, path in rows:
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID == sop_uid and ds.SeriesInstanceUID == series_uid
        k = int(ds.PatientID[1:])
        assert ds.StudyInstanceUID.startswith(f"{ROOT}.{k}") and int(ds.pixel_array[0, 0]) == 100 + k
    assert len(stored_files(spool)) == len(rows)
    # and what was not acknowledged was answered with a failure the sender sees (not a warning)
    assert all(status == "Success" or status.startswith(("Error", "Refused")) for status in statuses), statuses
    # lesionseg's choice: refused, with the reason in its log; the conformant one stored
    assert statuses == ["Error: CannotUnderstand"] * 9 + ["Success"], statuses
    assert gateway_process.text().count("is not a conformant DICOM UID (70 characters, over 64)") == 9


def test_a_resend_is_recognised_by_its_full_uid_and_identical_content(gateway, tmp_path: Path) -> None:
    """Finding 1: the same instance sent twice is stored once and acknowledged both times; an
    instance with an already acknowledged SOP Instance UID but other content (another patient's
    pixels) must not replace what was acknowledged first."""
    gateway_process, port, spool = gateway
    first = instance(tmp_path / "a" / "1.dcm", sop_uid=f"{ROOT}.7.1", series_uid=f"{ROOT}.7", study_uid=f"{ROOT}.70",
                     patient_id="FIRST", pixels=11)
    assert store([first], port) == ["Success"]
    assert store([first], port) == ["Success"]  # the re-send: acknowledged again, stored once
    rows = journal(spool, "SELECT sop_uid, path FROM instances")
    assert len(rows) == 1 and journal(spool, "SELECT instances FROM series") == [(1,)]
    digest = hashlib.sha256(Path(rows[0][1]).read_bytes()).hexdigest()
    other = instance(tmp_path / "b" / "1.dcm", sop_uid=f"{ROOT}.7.1", series_uid=f"{ROOT}.7", study_uid=f"{ROOT}.70",
                     patient_id="SECOND", pixels=99)
    (status,) = store([other], port)
    assert status.startswith(("Error", "Refused")), status
    assert hashlib.sha256(Path(rows[0][1]).read_bytes()).hexdigest() == digest
    assert pydicom.dcmread(rows[0][1]).PatientID == "FIRST"
    assert "already received with other content" in gateway_process.text()
    # a row of a journal from before digests were kept: the spool's bytes decide
    with sqlite3.connect(str(spool / "journal.sqlite")) as db:
        db.execute("UPDATE instances SET sha256 = ''")
    assert store([first], port) == ["Success"]
    (status,) = store([other], port)
    assert status.startswith(("Error", "Refused")), status
    assert hashlib.sha256(Path(rows[0][1]).read_bytes()).hexdigest() == digest
    assert journal(spool, "SELECT instances FROM series") == [(1,)]


@pytest.mark.gateway_keys("max_series_instances = 3\nmax_instance_pixels = 4096\n")
def test_series_and_instances_over_the_limits_are_refused_and_the_series_failed_visibly(gateway, tmp_path: Path) -> None:
    """Finding 2 at the gateway: an instance of more pixels than max_instance_pixels is refused
    before it is stored; a series' instances beyond max_series_instances are refused and the
    series is failed with the reason (`gateway status` shows it), its acknowledged instances kept."""
    gateway_process, port, spool = gateway
    files = [instance(tmp_path / "s" / f"{k}.dcm", sop_uid=f"{ROOT}.5.{k + 1}", series_uid=f"{ROOT}.5", study_uid=f"{ROOT}.50",
                      patient_id="P5", pixels=k) for k in range(5)]
    assert store(files, port) == ["Success"] * 3 + ["Error: CannotUnderstand"] * 2
    assert journal(spool, "SELECT state, instances FROM series") == [("failed", 3)]
    assert len(stored_files(spool)) == 3
    done = subprocess.run([sys.executable, "-m", "lesionseg.client.cli", "gateway", "status", "--config",
                           str(gateway_process.config)], capture_output=True, text=True, timeout=60)
    assert "max_series_instances = 3" in done.stdout, done.stdout + done.stderr
    big = instance(tmp_path / "b" / "1.dcm", sop_uid=f"{ROOT}.6.1", series_uid=f"{ROOT}.6", study_uid=f"{ROOT}.60",
                   patient_id="P6", pixels=1, size=128)
    assert store([big], port) == ["Error: CannotUnderstand"]
    assert len(stored_files(spool)) == 3 and "over max_instance_pixels = 4096" in gateway_process.text()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs mounted for the test (needs the right to mount: root with CAP_SYS_ADMIN)."""
    folder = tmp_path / "small_disk"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({done.stderr.strip() or 'not permitted'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_is_out_of_resources_and_leaves_nothing_half_written(small_disk: Path, tmp_path: Path) -> None:
    """Finding 4: the spool's disk fills between the instance's file and its journal row. The
    answer must be 0xA700 (out of resources: the sender retries later), not a permanent failure,
    and no file the journal does not know may stay behind (it would be segmented, though the
    sender was told it was not stored)."""
    import os

    port = free_port()
    path = config(tmp_path, port)
    path.write_text(path.read_text().replace(f'spool = "{tmp_path / "spool"}"', f'spool = "{small_disk / "spool"}"')
                    .replace("min_free_mb = 1\n", "min_free_mb = 0.0001\n"))
    spool = small_disk / "spool"
    running = GatewayProcess(path, tmp_path / "gateway.log").start(port)
    try:
        first = instance(tmp_path / "in" / "1.dcm", sop_uid=f"{ROOT}.8.1", series_uid=f"{ROOT}.8", study_uid=f"{ROOT}.80",
                         patient_id="P8", pixels=1, size=256)
        assert store([first], port) == ["Success"]
        second = instance(tmp_path / "in" / "2.dcm", sop_uid=f"{ROOT}.8.2", series_uid=f"{ROOT}.8", study_uid=f"{ROOT}.80",
                          patient_id="P8", pixels=2, size=256)
        stored = stored_files(spool)[0].stat().st_size
        pages = -(-stored // 4096)
        filler = small_disk / "filler"
        with open(filler, "wb") as handle:  # leave room for the second instance's file and not one page more
            free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
            handle.write(b"\0" * (free - pages * 4096))
        statuses = store([second], port)
        known = {row[0] for row in journal(spool, "SELECT path FROM instances")}
        on_disk = {str(p) for p in stored_files(spool)}
        assert statuses == ["Refused: OutOfResources"], statuses  # dcmtk's name of 0xA700
        assert on_disk == known, f"files the journal does not know: {on_disk - known}"
        filler.unlink()
        assert store([second], port) == ["Success"]  # the sender's retry, once there is room
    finally:
        running.stop()


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses a socket listens on at `port` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_every_listener_binds_the_configured_host(tmp_path: Path) -> None:
    """Finding 3: with host = 127.0.0.1 the metrics port listened on 0.0.0.0 too."""
    port, metrics = free_port(), free_port()
    path = config(tmp_path, port, f"metrics_port = {metrics}\n")
    running = GatewayProcess(path, tmp_path / "gateway.log").start(port)
    try:
        from waiting import wait_for

        wait_for(lambda: listening_addresses(metrics), 30, "the metrics port to listen")
        assert listening_addresses(port) == {"127.0.0.1"}
        assert listening_addresses(metrics) == {"127.0.0.1"}
    finally:
        running.stop()


def test_gateway_status_prints_no_terminal_escapes(tmp_path: Path) -> None:
    """Finding 3: patient-supplied strings (series description, reason) are printed with control
    characters escaped, so a crafted SeriesDescription cannot drive the operator's terminal."""
    from lesionseg.gateway.journal import Journal

    spool = tmp_path / "spool"
    journal = Journal(spool / "journal.sqlite")
    journal.add_instance(sop_uid="1.2.3.1", series_uid="1.2.3", study_uid="1.2", patient_id="P\x1b]0;owned\x07",
                         description="T2\x1b[2J\x1b[31mred\r\x08", calling_ae="A", path=tmp_path / "a", size=1)
    journal.close()
    path = config(tmp_path, free_port())
    done = subprocess.run([sys.executable, "-m", "lesionseg.client.cli", "gateway", "status", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not any(ord(c) < 32 and c != "\n" for c in done.stdout), repr(done.stdout)
    assert "T2\\x1b[2J" in done.stdout


def test_log_lines_carry_no_terminal_escapes() -> None:
    import logging

    from lesionseg.client.cli.main import _PrintableFormatter

    record = logging.LogRecord("lesionseg.gateway", logging.ERROR, __file__, 1, "series %s: %s", ("1.2", "T2\x1b[2J"), None)
    assert _PrintableFormatter("%(message)s").format(record) == "series 1.2: T2\\x1b[2J"
