"""`lesionseg status` without a server: exit 3; with a malformed address: exit 2."""

from __future__ import annotations

import pytest

from lesionseg.client.cli import main
from lesionseg.server.embedded import free_port


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
