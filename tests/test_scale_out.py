"""Scale-out: one batch spread over two real embedded servers (`-url a,b`), one SIGKILLed mid-batch;
and a server that comes back is used again."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import legacy_models_dir, ports
from pacs_peers import Forwarder, wait_for

from lesionseg.client.cli import main

pytestmark = [pytest.mark.server, pytest.mark.realdata, pytest.mark.slow]

N = 12


@pytest.fixture(scope="module")
def t2s_repository(shared, tmp_path_factory) -> Path:
    from lesionseg.export.legacy import export_sct_legacy

    repo = tmp_path_factory.mktemp("scale_out_repo")
    export_sct_legacy(legacy_models_dir(tmp_path_factory.mktemp("models")), repo, contrast="t2s")
    return repo


@pytest.fixture(scope="module")
def cohort(shared, tmp_path_factory) -> Path:
    """N variants of the real T2*w image (intensities scaled by 1 + 0.01 i), one folder."""
    image = nib.load(str(shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"))
    data = np.asarray(image.dataobj, dtype=np.float32)
    root = tmp_path_factory.mktemp("cohort")
    for i in range(N):
        nib.save(nib.Nifti1Image(data * (1 + 0.01 * i), image.affine, image.header), str(root / f"s{i:02d}.nii.gz"))
    return root


def _server(repo: Path):
    from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings

    return EmbeddedServer(ServerSettings(repository=repo, startup_timeout=300, grace_period=5, **ports()))


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asanyarray(nib.load(str(p)).dataobj) for p in sorted(folder.glob("*_lesionseg.nii.gz"))}


def test_batch_over_two_servers_survives_losing_one(t2s_repository, cohort, tmp_path, monkeypatch):
    from lesionseg.client.legacy import LegacyJob

    with _server(t2s_repository) as first, _server(t2s_repository) as second:
        reference = tmp_path / "reference"
        assert main(["-q", "deepseg-lesion", "-i", str(cohort), "-c", "t2s", "-ofolder", str(reference),
                     "-url", first.settings.grpc_url]) == 0
        # warm the second server too, so both answer at the same pace
        assert main(["-q", "deepseg-lesion", "-i", str(cohort / "s00.nii.gz"), "-c", "t2s", "-ofolder", str(tmp_path / "warm"),
                     "-url", second.settings.grpc_url]) == 0
        # the servers the batch's subjects came back from, as the client records them (the summary's column)
        answered: list[str] = []
        segment = LegacyJob.segment

        def recorded(job, image):
            result = segment(job, image)
            answered.append(result.server)
            return result

        monkeypatch.setattr(LegacyJob, "segment", recorded)
        out, summary = tmp_path / "out", tmp_path / "summary.tsv"
        result: list[int] = []
        run = threading.Thread(target=lambda: result.append(main([
            "-q", "deepseg-lesion", "-i", str(cohort), "-c", "t2s", "-ofolder", str(out), "-j", "4", "--summary", str(summary),
            "-url", f"{first.settings.grpc_url},{second.settings.grpc_url}"])))
        run.start()
        # kill it once the client has a subject of the batch back from it
        wait_for(lambda: second.settings.grpc_url in answered, 300, "a subject segmented by the second server to reach the client",
                 interval=0.02)
        assert len(list(out.glob("*_lesionseg.nii.gz"))) < N - 4, "the batch ended before the kill"
        os.killpg(second._process.pid, signal.SIGKILL)  # the server and its Python-backend stubs, mid-batch
        run.join(600)
        assert result == [0]
        assert _masks(out).keys() == _masks(reference).keys() and len(_masks(out)) == N
        assert all(np.array_equal(a, b) for a, b in zip(_masks(out).values(), _masks(reference).values()))
        servers = [line.split("\t")[6] for line in summary.read_text().splitlines()[1:]]
        assert set(servers) == {first.settings.grpc_url, second.settings.grpc_url}


def test_pool_takes_a_server_back(legacy_server):
    """A server that was down (nothing listening) is used once it answers."""
    from lesionseg.client.servers import ServerPool

    real = legacy_server.settings
    stand_in = Forwarder(("127.0.0.1", real.grpc_port))
    with ServerPool(f"{real.grpc_url},127.0.0.1:{stand_in.port}", check_seconds=0.2) as pool:
        assert pool.model("deepseg_lesion_t2s").name == "deepseg_lesion_t2s"  # now required of every server
        assert [s.healthy for s in pool.servers.values()] == [True, False]
        stand_in.start()
        try:
            wait_for(lambda: all(s.healthy for s in pool.servers.values()), 30, "the second server to be taken back")
            served = {pool.run(lambda server: server.model("deepseg_lesion_t2s") and time.sleep(0.01))[1] for _ in range(2)}
            assert served == set(pool.servers)  # least in flight, then least served: both get work
        finally:
            stand_in.stop()


def test_one_image_goes_to_a_server_that_answers(legacy_server, shared, tmp_path):
    from pacs_peers import free_port

    image = shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"
    url = f"127.0.0.1:{free_port()},{legacy_server.settings.grpc_url}"
    assert main(["-q", "deepseg-lesion", "-i", str(image), "-c", "t2s", "-ofolder", str(tmp_path), "-url", url]) == 0
    assert (tmp_path / "t2s_lesionseg.nii.gz").exists()
