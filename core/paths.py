"""Where lesionseg keeps things, and what a path the user typed means.

Every path a user gives (an argument or a `LESIONSEG_*` variable) is relative to the working
directory where they typed it. `user_path` makes it absolute at once, so it keeps that meaning
when it reaches a process running elsewhere (Triton runs in its own work folder).
"""

from __future__ import annotations

import os
from pathlib import Path

from lesionseg.core.settings import setting


def user_path(value: str | os.PathLike[str]) -> Path:
    """`value` (with `~` expanded) as an absolute, normalised path against the current directory."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(value))))


def cache_dir() -> Path:
    """lesionseg's cache: `$XDG_CACHE_HOME/lesionseg` (default `~/.cache/lesionseg`): the default
    model repository, downloaded release zips and their extracted models."""
    return user_path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lesionseg"


def default_repository() -> Path:
    """Where `lesionseg export` / `models install` write and `serve` serves when no repository is named."""
    return cache_dir() / "model_repository"


def repository(value: str | os.PathLike[str] | None = None) -> Path:
    """The model repository: argument > `LESIONSEG_REPOSITORY` > `default_repository()`, absolute."""
    return user_path(setting("REPOSITORY", value, default_repository()))
