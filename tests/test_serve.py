"""`lesionseg serve` and `EmbeddedServer`: readiness, clean stops, and every way starting can fail."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SELFTEST_REPOSITORY, ports, start_serve
from waiting import alive, poll

from lesionseg.client.cli import main
from lesionseg.core.errors import ServerStartError
from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings, summarize_failure

pytestmark = [pytest.mark.server, pytest.mark.slow]


def serve_args(repository: Path, chosen: dict[str, int]) -> list[str]:
    return [
        "serve", "--repository", str(repository), "--grpc-port", str(chosen["grpc_port"]),
        "--http-port", str(chosen["http_port"]), "--metrics-port", str(chosen["metrics_port"]),
    ]


def ignores_sigint(pid: int) -> bool:
    """Whether process `pid` has SIGINT set to ignored (the SigIgn mask of /proc/PID/status)."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigIgn:"))
    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))


def _ignore_sigint() -> None:  # runs in the child: what a non-interactive shell does to `cmd &`
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_serve_process(chosen: dict[str, int], *, sigint_ignored: bool = False) -> subprocess.Popen[str]:
    return start_serve(serve_args(SELFTEST_REPOSITORY, chosen), preexec_fn=_ignore_sigint if sigint_ignored else None)[0]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_gone(pid: int, seconds: float) -> bool:
    """Whether process `pid` is gone (or a zombie) within `seconds`."""
    return poll(lambda: not alive(pid), seconds, interval=0.1)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_reaches_ready_reports_status_and_stops_cleanly(stop_signal: signal.Signals) -> None:
    chosen = ports()
    proc = start_serve_process(chosen)
    try:
        triton = children(proc.pid)
        assert len(triton) == 1
        status = subprocess.run(
            [sys.executable, "-m", "lesionseg.client.cli", "status", "--url", f"127.0.0.1:{chosen['grpc_port']}"],
            capture_output=True, text=True, timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert "live, ready" in status.stdout and "selftest_scale" in status.stdout
        proc.send_signal(stop_signal)
        assert proc.wait(60) == 0
        assert wait_gone(triton[0], 5)
        assert "Triton stopped (exit code 0)" in (proc.stderr.read() if proc.stderr else "")
    finally:
        proc.kill()


def test_serve_started_with_sigint_ignored_still_stops_on_sigint() -> None:
    """`lesionseg serve ... &` from a script, then `kill -INT`: the background job inherits SIGINT
    as ignored; serve installs its own handler, and Triton gets the default disposition back, so
    both stop at once (Triton exits 0 by itself, not by the SIGKILL fallback)."""
    proc = start_serve_process(ports(), sigint_ignored=True)
    try:
        assert not ignores_sigint(proc.pid), "serve should have replaced the ignored SIGINT disposition"
        triton = children(proc.pid)
        assert len(triton) == 1
        assert not ignores_sigint(triton[0]), "tritonserver inherited an ignored SIGINT"
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert time.monotonic() - started < 15  # well inside the 20 s grace period
        assert wait_gone(triton[0], 5)
        assert "Triton stopped (exit code 0)" in (proc.stderr.read() if proc.stderr else "")
    finally:
        proc.kill()


def test_server_dies_with_its_parent() -> None:
    proc = start_serve_process(ports())
    triton = children(proc.pid)
    assert len(triton) == 1 and alive(triton[0])
    proc.kill()  # no chance to clean up: the kernel must take the server down
    proc.wait()
    assert wait_gone(triton[0], 10), "tritonserver outlived its parent"


def test_occupied_port(capsys: pytest.CaptureFixture[str]) -> None:
    chosen = ports()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", chosen["http_port"]))
        blocker.listen()
        assert main(serve_args(SELFTEST_REPOSITORY, chosen)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"lesionseg: error: HTTP port {chosen['http_port']} on 127.0.0.1 is already in use"


def test_same_port_twice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    chosen = ports()
    chosen["http_port"] = chosen["grpc_port"]
    assert main(serve_args(SELFTEST_REPOSITORY, chosen)) == 1
    assert "ports must differ" in capsys.readouterr().err


def test_missing_and_invalid_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(serve_args(tmp_path / "missing", ports())) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"lesionseg: error: {tmp_path / 'missing'}: model repository does not exist"
    garbage = tmp_path / "garbage"
    shutil.copytree(SELFTEST_REPOSITORY, garbage)
    (garbage / "selftest_sum" / "config.pbtxt").write_text("this is { not a config")
    started = time.monotonic()
    assert main(serve_args(garbage, ports())) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lesionseg: error: Triton server exited with code 1:") and "selftest_sum" in err, err
    assert time.monotonic() - started < 120


def test_model_that_fails_to_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(SELFTEST_REPOSITORY, repo)
    (repo / "selftest_sum" / "1" / "model.py").write_text("raise RuntimeError('weights are corrupt')\n")
    assert main(serve_args(repo, ports())) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lesionseg: error: Triton server exited with code 1: failed to load 'selftest_sum'"), err
    assert "weights are corrupt" in err and "\\n" not in err


def test_not_ready_in_time_is_an_error(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(SELFTEST_REPOSITORY, repo)
    slow = repo / "selftest_sum" / "1" / "model.py"
    slow.write_text("import time\ntime.sleep(60)\n" + slow.read_text())
    settings = ServerSettings(repository=repo, startup_timeout=3, grace_period=2, **ports())
    server = EmbeddedServer(settings)
    with pytest.raises(ServerStartError, match="not ready after 3 s"):
        with server:
            pass
    assert not server.running()


def test_summarize_failure_picks_the_useful_line() -> None:
    log = "\n".join([
        'E1124 17:52:47.574848 2077 server.cc:241] "CudaDriverHelper has not been initialized."',
        "I1124 17:52:47.576065 2077 model_lifecycle.cc:472] \"loading: m:1\"",
        'E1124 17:52:48.1 2077 model_lifecycle.cc:642] "failed to load \'m\' version 1: Internal: boom\\n\\nAt:\\n  x"',
        "error: creating server: Internal - failed to load all models",
    ])
    assert summarize_failure(log) == "failed to load 'm' version 1: Internal: boom"
    assert summarize_failure("error: creating server: Invalid argument - bad flag") == "creating server: Invalid argument - bad flag"
    assert summarize_failure("") == "no output"


@pytest.mark.slow
def test_a_sigkilled_servers_temporary_folder_is_swept_by_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23, finding 6: `serve` killed with SIGKILL leaves its work folder (backends, log) in
    the temporary directory; the next embedded server removes the folders of dead owners, and
    keeps a live one's."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR in this process too
    proc, _ = start_serve(serve_args(SELFTEST_REPOSITORY, ports()), env={**__import__("os").environ, "TMPDIR": str(tmp_path)})
    left = [p for p in tmp_path.iterdir() if p.name.startswith("lesionseg-triton-")]
    assert len(left) == 1
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    poll(lambda: not any(alive(pid) for pid in children(proc.pid)), 30)
    assert left[0].exists()  # nobody removed it
    mine = tmp_path / f"lesionseg-triton-{__import__('os').getpid()}-live"
    mine.mkdir()
    with EmbeddedServer(ServerSettings(repository=SELFTEST_REPOSITORY, startup_timeout=120, **ports())):
        assert not left[0].exists(), "the dead server's folder is still there"
        assert mine.exists()
