"""Progress display of the command line (only the CLI uses it; library code logs).

A spinner with the step's text on stderr while a long step runs (server start, inference),
shown only when stderr is a terminal and `--quiet` is off, so pipes and logs stay clean.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator


def shown(*, quiet: bool, stream=None) -> bool:
    """Whether progress is displayed: not quiet, and the stream is an interactive terminal."""
    stream = stream if stream is not None else sys.stderr
    return not quiet and bool(getattr(stream, "isatty", lambda: False)())


@contextlib.contextmanager
def step(text: str, *, quiet: bool = False) -> Iterator[None]:
    """Show `text` with a spinner while the block runs (nothing when not `shown`)."""
    if not shown(quiet=quiet):
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(text, spinner="dots"):
        yield


@contextlib.contextmanager
def bar(total: int, text: str, *, quiet: bool = False) -> Iterator:
    """A progress bar over `total` subjects; yields `advance(failed: bool)` (a no-op when not `shown`)."""
    if not shown(quiet=quiet):
        yield lambda failed=False: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    failures = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[failed]}"), transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task(text, total=total, failed="")

        def advance(failed: bool = False) -> None:
            nonlocal failures
            failures += bool(failed)
            progress.update(task, advance=1, failed=f"{failures} failed" if failures else "")

        yield advance
