"""Waiting on a condition, never for a fixed time: a test that needs something to have happened (a
server up, a file written, a process gone, a line logged) polls that very thing until a deadline,
and fails naming what it waited for. A sleep is only right where the time itself is the behaviour
under test (a worker that must be slow so that concurrency shows)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def poll(condition: Callable[[], T], timeout: float, *, interval: float = 0.2) -> T:
    """Call `condition` until it returns something truthy or `timeout` seconds pass; returns its
    last value (falsy on a timeout). It is called at least once, and once more at the deadline;
    it may raise to end the wait early (a process that exited, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            return value
        time.sleep(min(interval, left))  # the poll interval, not a wait for anything


def wait_for(condition: Callable[[], T], timeout: float, what: str, *, interval: float = 0.2) -> T:
    """`poll`, failing the test (AssertionError naming `what`) when `condition` stays falsy for
    `timeout` seconds; returns its truthy value."""
    value = poll(condition, timeout, interval=interval)
    if not value:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
    return value


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (exited, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group `pgid`, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        state, process_group = fields[0], int(fields[2])  # after the command: state, ppid, pgrp
        if process_group == pgid and state != "Z":
            members.append(int(entry.name))
    return members
