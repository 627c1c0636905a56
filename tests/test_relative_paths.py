"""Every path a user gives is relative to where they typed it — also when it reaches the Triton
server, which runs in a work folder of its own. Run as a user would: `lesionseg` processes started
in another working directory, with relative paths for every path argument and variable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ports, start_serve

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.realdata]


def lesionseg(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lesionseg.client.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def relative(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for name in ("LESIONSEG_REPOSITORY", "LESIONSEG_URL"):
        env.pop(name, None)
    return env


def test_install_serve_and_segment_with_relative_paths(shared: Path, tmp_path: Path, user_env: dict[str, str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    data = shared / "sct_testing_data" / "t2s"
    installed = lesionseg(["models", "install", "sct-legacy", "--from", relative(shared / "sct_models", work),
                           "--repository", "repo", "--contrast", "t2s"], cwd=work, env=user_env)
    assert installed.returncode == 0, installed.stderr
    assert (work / "repo" / "deepseg_lesion_t2s" / "config.pbtxt").is_file()
    assert f"(from {shared / 'sct_models'})" in installed.stdout  # recorded as meant, not as typed
    record = json.loads((work / "repo" / "deepseg_lesion_t2s_net" / "export.json").read_text())
    assert Path(record["source"]).is_absolute() and Path(record["source"]).is_file()

    # `serve --repository repo` from that folder (Triton itself runs elsewhere)
    chosen = ports()
    url = f"127.0.0.1:{chosen['grpc_port']}"
    serve, printed = start_serve(["serve", "--repository", "repo", "--grpc-port", str(chosen["grpc_port"]), "--http-port",
                         str(chosen["http_port"]), "--metrics-port", str(chosen["metrics_port"])], cwd=work, env=user_env)
    try:
        assert "deepseg_lesion_t2s" in printed[0]
        # every path argument relative: input, output folder, QC folder, centerline file
        done = lesionseg(["deepseg-lesion", "-i", relative(data / "t2s.nii.gz", work), "-c", "t2s", "-ofolder", "out",
                          "-qc", "qc", "-centerline", "file", "-file_centerline", relative(data / "t2s_seg.nii.gz", work),
                          "-url", url], cwd=work, env=user_env)
        assert done.returncode == 0, done.stderr
        assert (work / "out" / "t2s_lesionseg.nii.gz").is_file() and (work / "qc" / "index.html").is_file()
        (record,) = (work / "qc" / "_json").glob("qc_*.json")
        assert json.loads(record.read_text())["fname_in"] == str((data / "t2s.nii.gz").resolve())
    finally:
        serve.send_signal(signal.SIGINT)
        assert serve.wait(60) == 0

    # the embedded server started for one run, its repository a relative LESIONSEG_REPOSITORY
    sub = work / "sub"
    sub.mkdir()
    env = {**user_env, "LESIONSEG_REPOSITORY": "../repo"}
    done = lesionseg(["deepseg-lesion", "-i", relative(data / "t2s.nii.gz", sub), "-c", "t2s", "-ofolder", "out",
                      "-url", f"127.0.0.1:{ports()['grpc_port']}"], cwd=sub, env=env)
    assert done.returncode == 0, done.stderr
    assert f"starting the embedded server for this run ({work / 'repo'})" in done.stderr
    assert (sub / "out" / "t2s_lesionseg.nii.gz").is_file()
