from __future__ import annotations

from pathlib import Path

import pytest

from lesionseg.core.errors import UsageError
from lesionseg.core.paths import default_repository
from lesionseg.core.settings import port, setting
from lesionseg.server.launch.embedded import ServerSettings


def test_argument_beats_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESIONSEG_GRPC_PORT", "9101")
    assert setting("GRPC_PORT", 9201, 8001, port) == 9201
    assert setting("GRPC_PORT", None, 8001, port) == 9101
    monkeypatch.delenv("LESIONSEG_GRPC_PORT")
    assert setting("GRPC_PORT", None, 8001, port) == 8001


def test_bad_environment_value_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESIONSEG_HTTP_PORT", "eighty")
    with pytest.raises(UsageError, match="LESIONSEG_HTTP_PORT='eighty'"):
        ServerSettings.resolve(repository="x")
    monkeypatch.setenv("LESIONSEG_HTTP_PORT", "70000")
    with pytest.raises(UsageError, match="outside 1-65535"):
        ServerSettings.resolve(repository="x")


def test_server_settings_resolve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LESIONSEG_REPOSITORY", str(tmp_path))
    monkeypatch.setenv("LESIONSEG_HOST", "0.0.0.0")
    settings = ServerSettings.resolve(grpc_port=9001)
    assert settings.repository == tmp_path
    assert settings.grpc_port == 9001 and settings.http_port == 8000
    assert settings.grpc_url == "127.0.0.1:9001"  # a wildcard bind is dialled on loopback
    with pytest.raises(UsageError):
        ServerSettings(repository=tmp_path, grpc_port=0)
    with pytest.raises(TypeError):
        ServerSettings(tmp_path)  # type: ignore[misc]  # keyword-only


def test_default_repository_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("LESIONSEG_REPOSITORY", raising=False)
    assert default_repository() == tmp_path / "lesionseg" / "model_repository"
    assert ServerSettings.resolve().repository == tmp_path / "lesionseg" / "model_repository"


def test_repository_given_as_text_becomes_an_absolute_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Relative to where the user typed it, not to Triton's own working folder."""
    monkeypatch.chdir(tmp_path)
    assert ServerSettings(repository="some/where").repository == tmp_path / "some" / "where"
    monkeypatch.setenv("LESIONSEG_REPOSITORY", "../repo")
    assert ServerSettings.resolve().repository == tmp_path.parent / "repo"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ServerSettings(repository="~/r").repository == tmp_path / "r"
