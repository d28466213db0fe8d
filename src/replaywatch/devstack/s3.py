"""S3: moto's standalone server, a real HTTP S3 endpoint on loopback.

moto keeps objects in memory: stopping it loses them. It accepts any credentials;
the devstack hands out the ones below.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

from replaywatch.devstack import process
from replaywatch.exceptions import DevstackError

ACCESS_KEY_ID = "replaywatch"
SECRET_ACCESS_KEY = "replaywatch-local-secret"
REGION = "us-east-1"


class S3:
    name = "s3"

    def __init__(self, root: Path, port: int) -> None:
        self.dir = root / "s3"
        self.port = port
        self.log = self.dir / "moto.log"

    @property
    def marker(self) -> str:
        return f"--devstack={self.dir}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> int:
        process.ensure_bindable(self.port, "S3 (moto)")
        try:
            import moto.server  # noqa: F401
        except ImportError:
            raise DevstackError(
                "moto's server is not installed; pip install 'replaywatch[devstack]' (make test does)"
            ) from None
        self.dir.mkdir(parents=True, exist_ok=True)
        return process.spawn(
            [sys.executable, "-m", "replaywatch.devstack.moto_main", self.marker, str(self.port)],
            self.log,
        )

    def wait_ready(self, pid: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.is_ours(pid, self.marker):
                raise DevstackError(f"moto exited during start:\n{process.tail(self.log)}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise DevstackError(f"moto S3 not ready after {timeout:.0f}s; see {self.log}")
