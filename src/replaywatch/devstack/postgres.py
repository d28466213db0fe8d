"""A throwaway PostgreSQL cluster from Debian's ``postgresql`` package (initdb, pg_ctl).

PostgreSQL refuses to run as root; when started as root the cluster is owned by and
run as the ``postgres`` user that the package creates (or ``nobody``).
"""

from __future__ import annotations

import functools
import glob
import os
import pwd
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from replaywatch.devstack import process
from replaywatch.exceptions import DevstackError

USER = "replaywatch"
DATABASE = "replaywatch"


def pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    raise DevstackError(
        f"PostgreSQL's {name} was not found; install Debian's postgresql package "
        "(apt-get install postgresql, or run 'make deps')"
    )


def as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a command as ``user``: its uid, its group and, where
    the kernel lets us, no supplementary groups (``user=`` alone would keep root's group
    as the command's group)."""
    if user is None:
        return {}
    pw = pwd.getpwnam(user)
    args: dict[str, Any] = {"user": pw.pw_uid, "group": pw.pw_gid}
    if can_set_groups():
        args["extra_groups"] = []
    return args


@functools.cache
def can_set_groups() -> bool:
    """False inside a user namespace that denies setgroups(2) (some CI sandboxes and
    rootless containers): there a child keeps root's supplementary groups, which is
    harmless for a throwaway cluster, instead of failing to start with EPERM."""
    try:
        os.setgroups(os.getgroups())
    except PermissionError:
        return False
    return True


def postgres_group() -> int | None:
    """The group of the user PostgreSQL runs as, when it runs as another user (root)."""
    user = _run_as()
    return None if user is None else pwd.getpwnam(user).pw_gid


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise DevstackError("running as root, but there is no 'postgres' or 'nobody' user to run PostgreSQL as")


class Postgres:
    name = "postgres"

    def __init__(self, root: Path, port: int) -> None:
        self.dir = root / "postgres"
        self.data = self.dir / "data"
        self.port = port
        self.log = self.dir / "postgres.log"

    @property
    def marker(self) -> str:
        return str(self.data)

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _chown(self, user: str | None) -> None:
        if user is None:
            return
        pw = pwd.getpwnam(user)
        for path in [self.dir, *self.dir.rglob("*")]:
            os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)

    def _check_reachable(self, user: str | None) -> None:
        if user is None:
            return
        gid = pwd.getpwnam(user).pw_gid
        for parent in self.dir.resolve().parents:
            info = parent.stat()
            if not (info.st_mode & 0o001 or (info.st_gid == gid and info.st_mode & 0o010)):
                raise DevstackError(
                    f"PostgreSQL runs as '{user}' and cannot reach {self.dir}: {parent} is not "
                    "searchable by other users; set REPLAYWATCH_DEVSTACK_DIR to a directory under /tmp"
                )

    def start(self) -> int:
        process.ensure_bindable(self.port, "PostgreSQL")
        user = _run_as()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_reachable(user)
        self._chown(user)
        if not (self.data / "PG_VERSION").exists():
            res = subprocess.run(
                [
                    pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                **as_user(user),
            )
            if res.returncode != 0:
                raise DevstackError(f"initdb failed: {res.stderr.strip().splitlines()[-1:]}")
        # pg_ctl hands -o to a shell: paths are quoted
        opts = (
            f"-p {self.port} -k {shlex.quote(str(self.dir))} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200 -c shared_buffers=256MB"
        )
        res = subprocess.run(
            [pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start"],
            capture_output=True,
            text=True,
            **as_user(user),
        )
        if res.returncode != 0:
            raise DevstackError(f"PostgreSQL did not start: {process.tail(self.log, 3)}")
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        self._ensure_database(user)
        return pid

    def _ensure_database(self, user: str | None) -> None:
        psql = pg_bin("psql")
        q = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        base = [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", "postgres", "-tAc"]
        res = subprocess.run([*base, q], capture_output=True, text=True, **as_user(user))
        if res.stdout.strip() != "1":
            subprocess.run(
                [*base, f"CREATE DATABASE {DATABASE}"], capture_output=True, text=True, check=True, **as_user(user)
            )

    def wait_ready(self, pid: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = subprocess.run(
                [pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-d", DATABASE, "-U", USER],
                capture_output=True,
            )
            if res.returncode == 0:
                return
            time.sleep(0.2)
        raise DevstackError(f"PostgreSQL not ready after {timeout:.0f}s; see {self.log}")
