"""Processes the devstack starts: launched, recorded by PID, and stopped by that PID only.

Before any signal is sent, the PID's command line is checked for the marker (a path in
the state directory) that the devstack put there, so a PID reused by some other
process is never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from replaywatch.exceptions import DevstackError


def cache_dir(name: str) -> Path:
    """Where a download of the devstack is kept between runs: ``$XDG_CACHE_HOME`` (or
    ``~/.cache``) ``/replaywatch/<name>``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "replaywatch" / name


def wait_ready(pid: int, marker: str, log: Path, what: str, probe: Callable[[], object], *, timeout: float,
               pause: float) -> None:  # fmt: skip
    """Call ``probe`` until it returns (ready) or ``timeout`` s pass; any exception it
    raises means "not ready yet". A process of ours that exits meanwhile is reported
    with its status and its log since this start, at once."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive(pid, marker):
            status = exit_status(pid) or "not running"
            raise DevstackError(f"{what} (pid {pid}) exited during start ({status}); its log since this start:\n"
                                f"{tail(log)}")  # fmt: skip
        try:
            probe()
            return
        except Exception as exc:  # any failure means "not ready yet"
            last = exc
            time.sleep(pause)
    raise DevstackError(f"{what} not ready after {timeout:.0f}s ({last!r}); see {log}")


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int, *, taken: Iterable[int] = ()) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1, none of ``taken``. Every socket stays bound
    until all are chosen: one at a time, the kernel can hand out a port it just gave back,
    and two services of one JVM on the same port share it (Vert.x does), so that some
    connections reach the wrong one."""
    held: list[socket.socket] = []
    ports: list[int] = []
    avoid = set(taken)
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port not in avoid:
                ports.append(port)
                avoid.add(port)
        return ports
    finally:
        for s in held:
            s.close()


def ensure_bindable(port: int, what: str) -> None:
    """Fail with one line when 127.0.0.1:port can't be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise DevstackError(
                f"{what}: cannot bind 127.0.0.1:{port} ({exc.strerror}); stop what uses it, "
                f"or run 'replaywatch devstack down --purge' to pick new free ports"
            ) from None


def cmdline(pid: int) -> str:
    """The process's command line, space-joined ("" when gone or unreadable)."""
    import psutil

    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def _start_time(pid: int) -> float | None:
    """When the process started (with its PID, what identifies it), None when gone or a zombie."""
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except psutil.Error:
        return None


def is_ours(pid: int | None, marker: str) -> bool:
    """True when ``pid`` is alive, not a zombie, and its command line holds ``marker``."""
    if not pid or _start_time(pid) is None:
        return False
    return marker in cmdline(pid)


_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}
"""The processes this process started, by PID: their exit status can be read back."""


def alive(pid: int, marker: str) -> bool:
    """Whether a process being started still runs. One this process spawned is asked by
    its exit status: right after ``exec`` its command line can read empty for a moment
    (the kernel sets the new one after the parent already saw the exec succeed), and a
    live versitygw was once taken for dead, started again, and the second one could not
    bind the port (CI). Any other is ours when its command line holds ``marker``."""
    proc = _SPAWNED.get(pid)
    if proc is not None:
        return proc.poll() is None
    return is_ours(pid, marker)


def exit_status(pid: int) -> str | None:
    """How a process this process spawned ended ("exit code 1", "signal 9"), or None
    when it is still running or was not spawned here."""
    proc = _SPAWNED.get(pid)
    if proc is None or proc.poll() is None:
        return None
    code = proc.returncode
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def spawn(
    argv: list[str], log: Path, *, env: dict[str, str] | None = None, user: str | None = None, cwd: Path | None = None
) -> int:
    """Start a detached process (own session, output to ``log``, after a line that marks
    this start); return its PID."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(
            f"=== replaywatch devstack: starting {Path(argv[0]).name} at {time.strftime('%H:%M:%S')} ===\n".encode()
        )
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            user=user,
            cwd=cwd,
        )
    _SPAWNED[proc.pid] = proc
    return proc.pid


def stop(pid: int | None, marker: str, *, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
    """Signal our process and wait for it to go; SIGKILL it after ``timeout``.

    Returns False when there was nothing of ours to stop. Once signalled, the process is
    followed by its PID and start time, not its command line: a process that is exiting
    loses its command line before it is gone, and "stopped" means gone (or a zombie).
    """
    if not is_ours(pid, marker):
        return False
    assert pid is not None
    started = _start_time(pid)

    def still_there() -> bool:
        _reap(pid)
        return started is not None and _start_time(pid) == started

    _signal(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not still_there():
            return True
        time.sleep(0.05)
    _signal(pid, signal.SIGKILL)
    while still_there():
        time.sleep(0.05)
    return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise DevstackError(
            f"not permitted to signal pid {pid} ({cmdline(pid)[:80]!r}); it was started by another "
            "user or from another user namespace: stop it from there"
        ) from None


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
