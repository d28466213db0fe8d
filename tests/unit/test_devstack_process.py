"""How the devstack stops the processes it started: by PID, and only once they are gone."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from replaywatch.devstack import process
from replaywatch.exceptions import DevstackError

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


def test_a_process_just_started_is_not_taken_for_dead_while_its_command_line_reads_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after exec the kernel may not have set the new command line yet; the
    devstack once started versitygw again over a live one, which then failed to bind."""
    pid = process.spawn(["sleep", "5"], tmp_path / "log")
    try:
        monkeypatch.setattr(process, "cmdline", lambda _pid: "")
        probes: list[int] = []

        def probe() -> None:
            probes.append(1)
            if len(probes) < 3:
                raise OSError("not listening yet")

        process.wait_ready(pid, "sleep", tmp_path / "log", "sleeper", probe, timeout=10, pause=0.01)
        assert len(probes) == 3
    finally:
        monkeypatch.undo()
        process.stop(pid, "sleep")


def test_a_process_that_exits_during_its_start_is_reported_at_once_with_its_status(tmp_path: Path) -> None:
    pid = process.spawn(["sh", "-c", "echo cannot bind; exit 3"], tmp_path / "log")

    def never() -> None:
        raise OSError("not listening")

    # at once, with its status and log; at the time limit it would be "not ready after 30s"
    with pytest.raises(DevstackError, match=r"exited during start \(exit code 3\)(?s:.*)cannot bind"):
        process.wait_ready(pid, "sh", tmp_path / "log", "failer", never, timeout=30, pause=0.01)
