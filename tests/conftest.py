"""Shared fixtures: one real embedded Triton server per test session, real data paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
SHARED = Path(os.environ.get("LESIONSEG_SHARED", ROOT.parent / "shared"))
SELFTEST_REPOSITORY = TESTS / "model_repository"


def ports() -> dict[str, int]:
    from lesionseg.server.embedded import free_port

    chosen: set[int] = set()
    while len(chosen) < 3:
        chosen.add(free_port())
    grpc, http, metrics = sorted(chosen)
    return {"grpc_port": grpc, "http_port": http, "metrics_port": metrics}


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared (real SCT weights and images); tests needing it skip when it is absent."""
    if not (SHARED / "sct_models").is_dir():
        pytest.skip(f"real data not found at {SHARED} (set LESIONSEG_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def session_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository the session's server serves: the selftest models (more are added by later fixtures)."""
    repo = tmp_path_factory.mktemp("repository")
    for model in SELFTEST_REPOSITORY.iterdir():
        shutil.copytree(model, repo / model.name)
    return repo


@pytest.fixture(scope="session")
def server(session_repository: Path):
    """The one real embedded Triton server of the test session."""
    from lesionseg.server.embedded import EmbeddedServer, ServerSettings

    settings = ServerSettings(repository=session_repository, startup_timeout=300, grace_period=10, **ports())
    with EmbeddedServer(settings) as running:
        yield running
