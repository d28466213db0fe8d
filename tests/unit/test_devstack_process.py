"""How the devstack stops the processes it started: by PID, and only once they are gone."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from replaywatch.devstack import process

# Runs with the marker in its command line; on SIGTERM it execs into `sleep`, which drops
# the marker from the command line while the process (same PID, same start time) lives on,
# as an exiting process does when its memory is released before it is gone.
_EXEC_ON_TERM = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: os.execvp("sleep", ["sleep", "1"]))
while True:
    time.sleep(0.05)
"""


def _gone_or_zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def test_stop_returns_only_when_the_process_is_gone(tmp_path: Path) -> None:
    marker = f"--devstack={tmp_path}"
    pid = process.spawn([sys.executable, "-c", _EXEC_ON_TERM, marker], tmp_path / "log")
    deadline = time.monotonic() + 10
    while not process.is_ours(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # the SIGTERM handler is installed
    assert process.stop(pid, marker, timeout=10)
    assert _gone_or_zombie(pid)


def test_stop_leaves_a_process_that_is_not_ours_alone(tmp_path: Path) -> None:
    pid = process.spawn(["sleep", "5"], tmp_path / "log")
    try:
        assert not process.stop(pid, f"--devstack={tmp_path}")
        assert not _gone_or_zombie(pid)
    finally:
        process.stop(pid, "sleep")
