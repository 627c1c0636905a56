"""The gateway's parts without Triton: config precedence and errors, routing rules, the journal's
state machine, the spool, and a real gateway process receiving from dcmtk (disk watermark, a bad
series failing with one line, Prometheus metrics)."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pydicom
import pytest

from lesionseg.gateway import journal as states
from lesionseg.gateway.config import load_config
from lesionseg.gateway.journal import Journal
from lesionseg.gateway.routing import plane_of, route_for
from lesionseg.gateway.spool import Spool
from lesionseg.core.errors import UsageError

CONFIG = """
[gateway]
port = 11190
stable_age = 3
spool = "myspool"

[callers]
ORTHANC = ["127.0.0.1"]

[[routes]]
name = "t2s"
series_description = "(?i)t2star|medic"
orientation = "axial"
contrast = "t2s"

[[routes]]
name = "mp2rage"
protocol_name = "(?i)mp2rage"
image_type = ["DERIVED", "UNI"]
task = "seg_ms_lesion_mp2rage"
crop_to_cord = true

[[routes]]
name = "rest"
action = "ignore"
"""


def test_config_precedence(tmp_path, monkeypatch):
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    assert config.port == 11190 and config.stable_age == 3 and config.spool == (tmp_path / "myspool").resolve()
    assert config.callers == {"ORTHANC": ("127.0.0.1",)} and [r.name for r in config.routes] == ["t2s", "mp2rage", "rest"]
    assert config.ae_title == "LESIONSEG" and config.min_free_mb == 1024  # defaults
    monkeypatch.setenv("LESIONSEG_GATEWAY_PORT", "11191")
    monkeypatch.setenv("LESIONSEG_GATEWAY_STABLE_AGE", "7.5")
    assert load_config(path).port == 11191 and load_config(path).stable_age == 7.5
    assert load_config(path, port=11192).port == 11192


@pytest.mark.parametrize("text, message", [
    ("[gateway]\nprot = 1\n[callers]\nA = []\n", "unknown key [gateway] 'prot'"),
    ("[gateway]\nport = 'x'\n[callers]\nA = []\n", "'x' is not a whole number"),
    ("[gateway]\nport = 1\n", "no [callers]"),
    ("[callers]\nA = []\n[[routes]]\nname = 'r'\nseries_description = '('\ncontrast = 't2s'\n", "route 'r': series_description is not a regular expression"),
    ("[callers]\nA = []\n[[routes]]\nname = 'r'\ncontrast = 't3'\n", "contrast 't3' is not one of"),
    ("[callers]\nA = []\n[[routes]]\nname = 'r'\n", "give either contrast (legacy) or task"),
    ("[callers]\nA = []\n[[destinations]]\nname = 'd'\nkind = 'cstore'\n", "needs ae_title, host and port"),
    ("[callers]\nA = []\n[[destinations]]\nname = 'd'\nkind = 'ftp'\n", "kind 'ftp'"),
    ("[gateway\n", "not valid TOML"),
    ("[weird]\n", "unknown section 'weird'"),
    # issue 23, finding 5: wrong types are refused, not coerced
    ("[callers]\nORTHANC = '127.0.0.1'\n", "[callers] ORTHANC: '127.0.0.1' is not a list of hosts"),
    ("[gateway]\nport = true\n[callers]\nA = []\n", "[gateway] port: True is not a whole number"),
    ("[gateway]\nworkers = 1.9\n[callers]\nA = []\n", "[gateway] workers: 1.9 is not a whole number"),
    ("[gateway]\nmetrics_port = 70000\n[callers]\nA = []\n", "[gateway] metrics_port: 70000 is outside 0-65535 (0: off)"),
    ("[gateway]\nembedded_server = 1\n[callers]\nA = []\n", "[gateway] embedded_server: 1 is not true or false"),
    ("[gateway]\nstable_age = 'soon'\n[callers]\nA = []\n", "[gateway] stable_age: 'soon' is not a number"),
    ("[callers]\nA = []\n[[routes]]\nname = 'r'\nimage_type = 'ORIGINAL'\ncontrast = 't2s'\n",
     "[[routes]] #1: image_type: 'ORIGINAL' is not a list of strings"),
    ("[callers]\nA = []\n[[destinations]]\nname = 'd'\nkind = 'cstore'\nae_title = 'X'\nhost = 'h'\nport = '104'\n",
     "[[destinations]] #1: port: '104' is not a whole number"),
])
def test_config_errors_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as error:
        load_config(path)
    assert message in str(error.value) and len(str(error.value).splitlines()) == 1


def _ds(**values):
    ds = pydicom.Dataset()
    ds.Modality = "MR"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def test_routing_rules(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    routes = load_config(path).routes
    assert route_for(routes, _ds(SeriesDescription="T2star axial")).name == "t2s"
    sagittal = _ds(SeriesDescription="T2star", ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
    assert plane_of(sagittal) == "sagittal" and route_for(routes, sagittal).name == "rest"
    uni = _ds(ProtocolName="MP2RAGE_1mm", ImageType=["DERIVED", "PRIMARY", "UNI"])
    assert route_for(routes, uni).name == "mp2rage"
    assert route_for(routes, _ds(ProtocolName="MP2RAGE_1mm", ImageType=["ORIGINAL", "PRIMARY"])).name == "rest"
    assert route_for(routes[:2], _ds(Modality="CT", SeriesDescription="T2star")) is None


def test_journal_states_and_deliveries(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    common = dict(series_uid="1.2.3", study_uid="1.2", patient_id="P", description="T2", calling_ae="A")
    assert journal.add_instance(sop_uid="1.2.3.1", path=tmp_path / "a", size=10, now=100.0, **common)
    assert journal.add_instance(sop_uid="1.2.3.2", path=tmp_path / "b", size=10, now=101.0, **common)
    assert not journal.add_instance(sop_uid="1.2.3.2", path=tmp_path / "b", size=10, now=102.0, **common)  # resend
    assert [j.uid for j in journal.stable(100.5)] == [] and [j.uid for j in journal.stable(101.0)] == ["1.2.3"]
    assert journal.set_state("1.2.3", states.QUEUED, route="t2s", expect=states.RECEIVED)
    claimed = journal.next_queued()
    assert claimed.uid == "1.2.3" and claimed.state == states.RUNNING and journal.next_queued() is None
    assert journal.requeue_interrupted() == 1  # a restart finds it running: queued again
    assert journal.next_queued().attempts == 2
    journal.add_deliveries("1.2.3", ["pacs", "web"], {"9.1": tmp_path / "seg.dcm", "9.2": tmp_path / "sr.dcm"})
    journal.set_state("1.2.3", states.SENDING)
    assert len(journal.pending_deliveries()) == 4
    journal.delivered("1.2.3", "pacs", "9.1")
    journal.delivery_failed("1.2.3", "web", "9.1", "down", retry_at=1e12)
    assert {(r["destination"], r["sop_uid"]) for r in journal.pending_deliveries()} == {("pacs", "9.2"), ("web", "9.2")}
    journal.add_deliveries("1.2.3", ["pacs", "web"], {"9.1": tmp_path / "seg.dcm", "9.2": tmp_path / "sr.dcm"})  # re-run
    sent = [r for r in journal.deliveries("1.2.3") if r["state"] == "sent"]
    assert [(r["destination"], r["sop_uid"]) for r in sent] == [("pacs", "9.1")]  # never sent twice
    for destination, sop in (("pacs", "9.2"), ("web", "9.1"), ("web", "9.2")):
        journal.delivered("1.2.3", destination, sop)
    assert journal.job("1.2.3").state == states.SENT
    # a new instance reopens the series: segmented and sent again
    assert journal.add_instance(sop_uid="1.2.3.3", path=tmp_path / "c", size=10, now=200.0, **common)
    assert journal.job("1.2.3").state == states.RECEIVED and journal.job("1.2.3").instances == 3
    assert all(r["state"] == "pending" for r in journal.deliveries("1.2.3"))


def test_spool_writes_durably_and_finds_orphans(tmp_path):
    spool = Spool(tmp_path / "spool")
    path = spool.write("1.2.3", "1.2.3.4", b"DICM" * 10)
    assert path.read_bytes() == b"DICM" * 10 and path.parent.name == "1.2.3"
    (path.parent / ".incoming.leftover").write_bytes(b"half")
    assert spool.orphans(set()) == [path] and not (path.parent / ".incoming.leftover").exists()
    assert spool.orphans({str(path)}) == []
    assert spool.instance_path("../../etc", "x/y").parent.parent == spool.instances  # no path escapes


def test_spool_names_are_one_to_one_and_never_overwrite(tmp_path):
    """Distinct UIDs never share a file, however long or odd (issue 23, finding 1: a cut at 60
    characters made nine instances one file); a file under a name is never replaced by other bytes."""
    from lesionseg.gateway.spool import SpoolConflict, safe_uid

    long = "2.25." + "1" * 59
    uids = [long + "0", long + "1", long + "0 ", long + "0\x01", "1.2.3", "1.2.3 ", "../1.2", "é.1"]
    names = [safe_uid(u) for u in uids]
    assert len(set(names)) == len(uids) and names[4] == "1.2.3"
    assert all(len(n) <= 65 and "/" not in n and n not in (".", "..") for n in names)
    spool = Spool(tmp_path / "spool")
    path = spool.write("1.2.3", "1.2.3.4", b"first")
    assert spool.write("1.2.3", "1.2.3.4", b"first") == path  # the same bytes: a re-send, nothing changes
    with pytest.raises(SpoolConflict):
        spool.write("1.2.3", "1.2.3.4", b"other")
    assert path.read_bytes() == b"first" and [p.name for p in path.parent.iterdir()] == ["1.2.3.4.dcm"]


@pytest.mark.parametrize(("uid", "problem"), [
    ("1.2.840.10008.1.2", None), ("2.25.0", None), ("1.2.3\x00", None),
    ("", "empty"), ("1." * 32 + "1", "65 characters, over 64"), ("1.2.3 ", "characters other than digits and dots (' ')"),
    ("1.2.3a", "characters other than digits and dots ('a')"), ("1.02.3", "an empty component or one with a leading zero"),
    ("1..2", "an empty component or one with a leading zero"), ("1.2.", "an empty component or one with a leading zero"),
])
def test_uid_problem_follows_ps3_5(uid, problem):
    from lesionseg.client.dicom.uids import uid_problem

    assert uid_problem(uid) == problem


def test_journal_knows_an_instance_by_its_full_uid_and_digest(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    common = dict(series_uid="1.2.3", study_uid="1.2", patient_id="P", description="T2", calling_ae="A", size=1)
    assert journal.instance("1.2.3.1") is None
    assert journal.add_instance(sop_uid="1.2.3.1", path=tmp_path / "a", sha256="ab", **common)
    assert journal.instance("1.2.3.1") == ("1.2.3", "ab") and journal.instance("1.2.3.10") is None


needs_dcmtk = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed (Debian: apt-get install dcmtk)")


@needs_dcmtk
@pytest.mark.realdata
@pytest.mark.slow  # a real gateway process and storescu
def test_real_gateway_watermark_bad_series_metrics(shared, tmp_path):
    """A gateway process (no Triton): a full disk refuses the association; a series with a missing
    slice fails at once with one line in the log and the job table; /metrics counts what came in."""
    from dicom_data import write
    from pacs_peers import GatewayProcess, free_port, storescu, wait_for

    port, metrics = free_port(), free_port()
    folder = write(shared, "sagittal", tmp_path / "gap")
    next(iter(sorted(folder.glob("*_0020.dcm")))).unlink()

    def config(min_free_mb: float) -> Path:
        path = tmp_path / "gateway.toml"
        path.write_text(f'[gateway]\nhost = "127.0.0.1"\nport = {port}\nstable_age = 0.5\nmin_free_mb = {min_free_mb}\n'
                        f'url = "127.0.0.1:1"\nmetrics_port = {metrics}\n[callers]\nSTORESCU = []\n'
                        '[[routes]]\nname = "all"\ncontrast = "t2"\n')
        return path

    gateway = GatewayProcess(config(1), tmp_path / "gateway.log").start(port)
    try:
        assert storescu(folder, port).returncode == 0
        wait_for(lambda: "non-uniform slice spacing" in gateway.text(), 30, "the failure line")
        failure = [line for line in gateway.text().splitlines() if "non-uniform slice spacing" in line]
        assert len(failure) == 1 and "series " in failure[0] and "failed" in failure[0]
        journal = Journal(tmp_path / "spool" / "journal.sqlite")
        (job,) = journal.jobs()
        assert job.state == states.FAILED and "1 missing slice?" in job.reason and job.instances == 51
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read().decode()
        assert "lesionseg_gateway_instances_received_total 51.0" in text
        assert 'lesionseg_gateway_failures_total{stage="segment"} 1.0' in text
        assert 'lesionseg_gateway_jobs{state="failed"} 1.0' in text and "lesionseg_gateway_spool_bytes" in text
    finally:
        assert gateway.stop() == 0
    gateway = GatewayProcess(config(1e12), tmp_path / "gateway2.log")
    gateway.log = open(gateway.log_path, "a")
    import subprocess
    import sys

    gateway.process = subprocess.Popen([sys.executable, "-m", "lesionseg.client.cli", "gateway", "--config", str(config(1e12))],
                                       stdout=gateway.log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "listening" in gateway.text(), 60, "the gateway to listen")
        refused = storescu(folder, port)
        assert refused.returncode != 0 and "Local Limit Exceeded" in refused.stdout + refused.stderr
        wait_for(lambda: "under the 1000000000000 MB watermark" in gateway.text(), 10, "the refusal line")
    finally:
        assert gateway.stop() == 0


def test_shipped_and_documented_configs_load(tmp_path):
    """deploy/pacs/gateway.toml and the README's example parse and validate."""
    import re

    root = Path(__file__).resolve().parents[1]
    shipped = load_config(root / "deploy" / "pacs" / "gateway.toml")
    assert shipped.embedded_server and [d.name for d in shipped.destinations] == ["orthanc"]
    (block,) = re.findall(r"```toml\n(.*?)```", (root / "README.md").read_text(), re.S)
    (tmp_path / "readme.toml").write_text(block)
    documented = load_config(tmp_path / "readme.toml")
    assert documented.routes[0].contrast == "t2s" and documented.callers == {"ORTHANC": ("127.0.0.1",)}
    assert route_for(documented.routes, _ds(SeriesDescription="T2* MEDIC")).name == "t2star axial"


def test_yaml_config(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "gateway.yaml"
    path.write_text("gateway:\n  port: 11300\ncallers:\n  ORTHANC: []\nroutes:\n  - name: t2s\n    contrast: t2s\n")
    config = load_config(path)
    assert config.port == 11300 and config.routes[0].model == "deepseg_lesion_t2s"


def test_relative_spool_follows_where_it_was_given(tmp_path, monkeypatch):
    """A relative spool from the file is relative to the file; from the environment or an
    argument, to the current folder."""
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "gateway.toml"
    path.write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    assert load_config(path).spool == (folder / "myspool").resolve()
    monkeypatch.setenv("LESIONSEG_GATEWAY_SPOOL", "envspool")
    assert load_config(path).spool == (tmp_path / "envspool").resolve()
    assert load_config(path, spool="argspool").spool == (tmp_path / "argspool").resolve()


def test_journal_of_an_earlier_version_gets_the_digest_column(tmp_path):
    import sqlite3

    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(str(path)) as db:  # the instances table as the gateway before issue 23 made it
        db.execute("CREATE TABLE instances (sop_uid TEXT PRIMARY KEY, series_uid TEXT NOT NULL, path TEXT NOT NULL, "
                   "bytes INTEGER NOT NULL, calling_ae TEXT NOT NULL, received REAL NOT NULL)")
        db.execute("INSERT INTO instances VALUES ('1.2.3.1', '1.2.3', '/a', 1, 'A', 0)")
    journal = Journal(path)
    assert journal.instance("1.2.3.1") == ("1.2.3", "")


def test_identity_problem_names_the_first_bad_uid():
    from lesionseg.client.dicom.uids import identity_problem

    good = {"SOPInstanceUID": "1.2.3.4", "SeriesInstanceUID": "1.2.3", "StudyInstanceUID": "1.2"}
    assert identity_problem(good) is None
    assert identity_problem({**good, "StudyInstanceUID": "1.02"}) == ("Study Instance UID", "1.02",
                                                                        "an empty component or one with a leading zero")
    assert identity_problem({**good, "SOPInstanceUID": ""}) == ("SOP Instance UID", "", "empty")
