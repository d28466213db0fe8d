"""S3: versitygw (Versity S3 Gateway, Apache-2.0) over a directory, on loopback.

Built once with ``go install`` (Go from the machine, modules from the Go proxy) and
cached under ``~/.cache/replaywatch/``, the way Kafka's jars are; ``VERSITYGW_BIN``
names a binary built elsewhere instead. Objects are files under the stack's directory
(its posix backend), so they outlive a restart of the server. Metadata goes to extended
attributes, or to a sidecar directory where the filesystem has none.

Measured on this machine (bench/HISTORY.md): per 1.5 KB PUT it costs a
sixth of the CPU that moto's in-memory server did, and it honours ``If-None-Match: *``
(one of 16 racing PUTs wins; the others get 412).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from replaywatch.devstack import process
from replaywatch.exceptions import DevstackError

VERSITYGW_VERSION = "1.8.0"
MODULE = "github.com/versity/versitygw/cmd/versitygw"
ACCESS_KEY_ID = "replaywatch"
SECRET_ACCESS_KEY = "replaywatch-local-secret"
REGION = "us-east-1"


def binary() -> str:
    """The versitygw binary: ``VERSITYGW_BIN``, or the cached build (built on first use)."""
    given = os.environ.get("VERSITYGW_BIN")
    if given:
        if not os.access(given, os.X_OK):
            raise DevstackError(f"VERSITYGW_BIN={given} is not an executable file; unset it or fix the path")
        return given
    cached = process.cache_dir(f"versitygw-{VERSITYGW_VERSION}") / "versitygw"
    if cached.exists():
        return str(cached)
    go = shutil.which("go")
    if not go:
        raise DevstackError(
            f"Go is needed to build the local S3 server (go install {MODULE}@v{VERSITYGW_VERSION}) and was not "
            "found; install Go 1.24+ or set VERSITYGW_BIN to a versitygw binary"
        )
    tmp = cached.parent / "build.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    res = subprocess.run(
        [go, "install", f"{MODULE}@v{VERSITYGW_VERSION}"],
        env={**os.environ, "GOBIN": str(tmp), "CGO_ENABLED": "0"},
        capture_output=True,
        text=True,
    )
    if res.returncode != 0 or not (tmp / "versitygw").exists():
        last = (res.stdout + res.stderr).strip().splitlines()[-1:] or ["(no output)"]
        raise DevstackError(f"go install {MODULE}@v{VERSITYGW_VERSION} failed: {last[0]}")
    (tmp / "versitygw").rename(cached)
    shutil.rmtree(tmp, ignore_errors=True)
    return str(cached)


def _has_xattrs(path: Path) -> bool:
    probe = path / ".xattr-probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.replaywatch", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)


class S3:
    name = "s3"

    def __init__(self, root: Path, port: int) -> None:
        self.dir = root / "s3"
        self.data = self.dir / "data"
        self.port = port
        self.log = self.dir / "versitygw.log"

    @property
    def marker(self) -> str:
        """On versitygw's command line: the directory it serves."""
        return str(self.data)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> int:
        process.ensure_bindable(self.port, "S3 (versitygw)")
        exe = binary()
        self.data.mkdir(parents=True, exist_ok=True)
        backend = ["posix"]
        if not _has_xattrs(self.data):
            sidecar = self.dir / "meta"
            sidecar.mkdir(exist_ok=True)
            backend += ["--sidecar", str(sidecar)]
        # keys by environment, not argv: the command line is visible to every user
        env = {**os.environ, "ROOT_ACCESS_KEY_ID": ACCESS_KEY_ID, "ROOT_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}
        # --keep-alive: without it every request opens a connection (measured)
        argv = [exe, "--port", f"127.0.0.1:{self.port}", "--region", REGION, "--keep-alive", "--quiet",
                *backend, str(self.data)]  # fmt: skip
        return process.spawn(argv, self.log, env=env)

    def wait_ready(self, pid: int, timeout: float = 30.0) -> None:
        def probe() -> None:
            try:
                urllib.request.urlopen(f"{self.endpoint}/", timeout=1).close()
            except urllib.error.HTTPError:
                return  # an S3 answer (403 to an unsigned request): it serves

        process.wait_ready(pid, self.marker, self.log, "S3 (versitygw)", probe, timeout=timeout, pause=0.1)
