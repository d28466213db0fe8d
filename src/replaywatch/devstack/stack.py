"""The local stack: Kafka, PostgreSQL, S3 and a schema registry on 127.0.0.1, state in one
directory.

``state.json`` in that directory records each service's ports and the PID that ``up``
started; ``down`` stops exactly those PIDs. Ports are chosen free on the first ``up``
and kept, so a service stopped and started again comes back where it was, data kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from replaywatch.devstack import process, s3
from replaywatch.devstack.kafka import SASL_PASSWORD, SASL_USERNAME, Kafka
from replaywatch.devstack.postgres import Postgres, postgres_group
from replaywatch.devstack.registry import Registry
from replaywatch.devstack.s3 import S3
from replaywatch.exceptions import DevstackError

logger = logging.getLogger(__name__)

SERVICES = ("kafka", "postgres", "s3", "registry")
_SAVING = threading.Lock()


class Service(Protocol):
    name: str
    log: Path

    @property
    def marker(self) -> str: ...
    def start(self) -> int: ...
    def wait_ready(self, pid: int, timeout: float = ...) -> None: ...


def default_dir() -> Path:
    """``REPLAYWATCH_DEVSTACK_DIR``, else ``$TMPDIR/replaywatch-devstack`` (a path the
    unprivileged PostgreSQL user can reach even when we run as root)."""
    env = os.environ.get("REPLAYWATCH_DEVSTACK_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / "replaywatch-devstack"


def ensure_private_dir(root: Path) -> None:
    """Create the state directory privately, or check that it is private.

    Mode 0700, owned by whoever runs the devstack; when root runs PostgreSQL as the
    ``postgres`` user, 0710 with that user's group, so that PostgreSQL can reach its own
    0700 directory inside and nobody else can list or read anything. A symlink, or a
    directory another user owns, is refused: the state holds a database and the stack's
    credentials, and a directory in /tmp that someone else made first is theirs.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    info = os.lstat(root)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise DevstackError(f"{root} is a symlink or not a directory; remove it, or set REPLAYWATCH_DEVSTACK_DIR")
    if info.st_uid != os.geteuid():
        raise DevstackError(
            f"{root} belongs to another user (uid {info.st_uid}); remove it, or set REPLAYWATCH_DEVSTACK_DIR"
        )
    group = postgres_group()
    mode = 0o710 if group is not None else 0o700
    if group is not None and info.st_gid != group:
        os.chown(root, -1, group, follow_symlinks=False)
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(root, mode, follow_symlinks=False)


def _port_setting(name: str) -> int:
    raw = os.environ.get(f"REPLAYWATCH_DEVSTACK_{name}_PORT", "0")
    try:
        return int(raw)
    except ValueError:
        raise DevstackError(f"REPLAYWATCH_DEVSTACK_{name}_PORT must be a port number, got {raw!r}") from None


@dataclass
class Stack:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def _state(self) -> dict[str, dict[str, int | None]]:
        try:
            data: dict[str, dict[str, int | None]] = json.loads(self.state_file.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict[str, dict[str, int | None]]) -> None:
        """Write the state file atomically. The services start in parallel threads, each
        saving its PID: one lock, and a temporary file of each writer's own (a shared one
        was renamed away under another thread, which then failed the start)."""
        with _SAVING:
            ensure_private_dir(self.root)
            tmp = self.state_file.with_name(f"state.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(state, indent=2))
            tmp.replace(self.state_file)

    def _ports(self) -> dict[str, dict[str, int | None]]:
        state = self._state()
        missing = [name for name in SERVICES if name not in state]  # a stack made before a service was added
        if not missing and "sasl_port" in state.get("kafka", {}):
            return state
        # every port of the stack differs: the ones it already has, the ones set, the new ones
        used = [p for st in state.values() for k, p in st.items() if k != "pid" and isinstance(p, int)]
        wanted = {"KAFKA": "kafka", "POSTGRES": "postgres", "S3": "s3", "REGISTRY": "registry"}
        configured = {svc: _port_setting(name) for name, svc in wanted.items() if svc in missing}
        configured = {svc: port for svc, port in configured.items() if port}
        clash = [svc for svc, port in configured.items() if port in used or list(configured.values()).count(port) > 1]
        if clash:
            raise DevstackError(
                f"REPLAYWATCH_DEVSTACK_{clash[0].upper()}_PORT={configured[clash[0]]} is a port another service "
                "of the devstack uses; give each service its own port"
            )
        fields = {"kafka": ("port", "controller_port"), "postgres": ("port",), "s3": ("port",),
                  "registry": ("port", "management_port")}  # fmt: skip
        for name in missing:
            state[name] = {"pid": None} | ({"port": configured[name]} if name in configured else {})
        slots = [(name, f) for name in missing for f in fields[name] if f not in state[name]]
        slots += [("kafka", "sasl_port")] if "sasl_port" not in state["kafka"] else []
        for (name, f), port in zip(slots, process.free_ports(len(slots), taken=[*used, *configured.values()]),
                                   strict=True):  # fmt: skip
            state[name][f] = port
        self._save(state)
        return state

    def service(self, name: str) -> Service:
        st = self._ports()[name]
        if name == "kafka":
            return Kafka(self.root, int(st["port"] or 0), int(st["controller_port"] or 0), int(st["sasl_port"] or 0))
        if name == "postgres":
            return Postgres(self.root, int(st["port"] or 0))
        if name == "s3":
            return S3(self.root, int(st["port"] or 0))
        if name == "registry":
            return Registry(self.root, int(st["port"] or 0), int(st["management_port"] or 0))
        raise DevstackError(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")

    def pid(self, name: str) -> int | None:
        return self._state().get(name, {}).get("pid")

    def running(self, name: str) -> bool:
        return process.is_ours(self.pid(name), self.service(name).marker)

    def start(self, *names: str) -> dict[str, float]:
        """Start the named services (all by default) in parallel; return seconds each took."""
        names = names or SERVICES
        ensure_private_dir(self.root)
        state = self._ports()
        todo = [n for n in names if not self.running(n)]
        took: dict[str, float] = {}

        def one(name: str) -> tuple[str, int, float]:
            t0 = time.monotonic()
            svc = self.service(name)
            for attempt in (1, 2):
                pid = svc.start()
                state[name]["pid"] = pid
                self._save(state)
                try:
                    svc.wait_ready(pid)
                    break
                except DevstackError as exc:
                    # A process that died during its start (not one that is slow) is
                    # started once more: the failure is logged with its exit status.
                    if attempt == 2 or process.alive(pid, svc.marker):
                        raise
                    logger.warning("%s; starting it once more", exc)
            return name, pid, time.monotonic() - t0

        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=len(todo) or 1) as pool:
            futures = {n: pool.submit(one, n) for n in todo}
            for name, f in futures.items():
                try:
                    took[name] = f.result()[2]
                except DevstackError as exc:
                    errors.append(str(exc))
                except (OSError, subprocess.SubprocessError) as exc:
                    # the system refused something (a permission, a missing program):
                    # one line that names the service, not a traceback
                    errors.append(f"{name} could not be started: {type(exc).__name__}: {exc}")
        if errors:
            # leave nothing half-started behind
            self.stop(*todo)
            raise DevstackError("; ".join(errors))
        return took

    def stop(self, *names: str) -> list[str]:
        """Stop the named services (all by default), by the PIDs we recorded."""
        names = names or SERVICES
        state = self._state()
        stopped = []
        for name in names:
            st = state.get(name)
            if not st:
                continue
            svc = self.service(name)
            # PostgreSQL: SIGINT is its "fast" shutdown; the others stop on SIGTERM.
            sig = 2 if name == "postgres" else 15
            if process.stop(st.get("pid"), svc.marker, sig=sig):
                stopped.append(name)
            st["pid"] = None
        if state:
            self._save(state)
        return stopped

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def env(self) -> dict[str, str]:
        kafka = self.service("kafka")
        pg = self.service("postgres")
        obj = self.service("s3")
        registry = self.service("registry")
        assert isinstance(kafka, Kafka) and isinstance(pg, Postgres) and isinstance(obj, S3)
        assert isinstance(registry, Registry)
        return {
            "REPLAYWATCH_SCHEMA_REGISTRY_URL": registry.url,
            # the SASL listener of the local Kafka (not a setting: tests of SASL_* use it)
            "REPLAYWATCH_DEVSTACK_KAFKA_SASL_BOOTSTRAP": kafka.sasl_bootstrap,
            "REPLAYWATCH_DEVSTACK_KAFKA_SASL_USERNAME": SASL_USERNAME,
            "REPLAYWATCH_DEVSTACK_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
            # one broker, throwaway topics and bucket: the local stack asks for both
            "REPLAYWATCH_CREATE_TOPICS": "true",
            "REPLAYWATCH_CREATE_BUCKET": "true",
            "REPLAYWATCH_TOPIC_REPLICATION_FACTOR": "1",
            "REPLAYWATCH_TOPIC_MIN_INSYNC_REPLICAS": "1",
            "REPLAYWATCH_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "REPLAYWATCH_POSTGRES_DSN": pg.dsn,
            "REPLAYWATCH_S3_ENDPOINT": obj.endpoint,
            "REPLAYWATCH_S3_ACCESS_KEY_ID": s3.ACCESS_KEY_ID,
            "REPLAYWATCH_S3_SECRET_ACCESS_KEY": s3.SECRET_ACCESS_KEY,
            "REPLAYWATCH_S3_REGION": s3.REGION,
        }

    def status(self) -> dict[str, dict[str, object]]:
        state = self._state()
        return {
            name: {
                "running": self.running(name),
                "pid": state.get(name, {}).get("pid"),
                "port": state.get(name, {}).get("port"),
            }
            for name in SERVICES
        }
