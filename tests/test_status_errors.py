"""`lesionseg status` without a server: exit 3; with a malformed address: exit 2."""

from __future__ import annotations

import pytest

from lesionseg.client.cli import main
from lesionseg.server.launch.embedded import free_port


def test_unreachable_server_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"127.0.0.1:{free_port()}"
    assert main(["status", "--url", url, "--timeout", "2"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lesionseg: error: no Triton server at {url}")


@pytest.mark.parametrize("url", ["localhost", "localhost:", "host:99999", "a b:80"])
def test_malformed_url_is_a_usage_error(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", url]) == 2
    assert "is not HOST:PORT" in capsys.readouterr().err


def test_url_from_environment(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LESIONSEG_URL", "nonsense")
    assert main(["status"]) == 2
    assert "'nonsense' is not HOST:PORT" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["deepseg-lesion", "-c", "t2s"], ["deepseg", "-task", "seg_ms_lesion"]])
def test_remote_server_that_does_not_answer_exits_3(command: list[str], tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A -url on another host that does not answer is not replaced by a local embedded server
    (there is a repository to start one from, so only the remote address prevents it)."""
    monkeypatch.setenv("LESIONSEG_REPOSITORY", str(tmp_path))
    code = main([*command, "-i", str(tmp_path / "t2.nii.gz"), "-url", "triton.invalid:8001", "-ofolder", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len(err) == 1 and err[0].startswith("lesionseg: error: no Triton server at triton.invalid:8001"), err
    assert "starting the embedded server" not in "".join(err)


def test_no_repository_to_start_a_local_server_exits_3(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LESIONSEG_REPOSITORY", str(tmp_path / "none"))
    code = main(["deepseg-lesion", "-i", str(tmp_path / "t2.nii.gz"), "-c", "t2s", "-url", f"127.0.0.1:{free_port()}"])
    assert code == 3
    assert "no model repository at" in capsys.readouterr().err
