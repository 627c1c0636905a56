"""The CLI's progress display: a spinner on an interactive stderr only (a real pseudo-terminal)."""

from __future__ import annotations

import io
import os
import sys

import pytest
from waiting import wait_for

from lesionseg.client.cli.progress import shown, step


def test_shown_only_on_a_terminal_and_not_quiet() -> None:
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            assert shown(quiet=False, stream=tty) and not shown(quiet=True, stream=tty)
        assert not shown(quiet=False, stream=io.StringIO())
    finally:
        os.close(master)
        os.close(slave)


def test_spinner_text_reaches_the_terminal_and_nothing_reaches_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = os.openpty()
    tty = os.fdopen(slave, "w", buffering=1)
    try:
        monkeypatch.setattr(sys, "stderr", tty)
        os.set_blocking(master, False)
        seen = []

        def shown_on_the_terminal() -> bool:
            try:
                seen.append(os.read(master, 65536).decode(errors="replace"))
            except BlockingIOError:  # nothing written since the last read
                pass
            return "segmenting t2.nii.gz (seg_ms_lesion)" in "".join(seen)

        with step("segmenting t2.nii.gz (seg_ms_lesion)"):  # the block lasts until the spinner is seen
            wait_for(shown_on_the_terminal, 10, "the spinner's text on the terminal", interval=0.02)
    finally:
        tty.close()
        os.close(master)
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    with step("segmenting"):
        pass
    assert piped.getvalue() == ""
