"""The devstack itself: its own stack in its own directory, so that stopping and
restarting it does not disturb the session's stack."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from replaywatch.devstack import SERVICES, Stack
from replaywatch.devstack.process import cmdline

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_stack() -> Iterator[Stack]:
    # a space and a ';' in the path: pg_ctl hands its options to a shell
    parent = Path(tempfile.mkdtemp(prefix="rw devstack; test-"))
    os.chmod(parent, 0o755)
    stack = Stack(parent / "state")
    t0 = time.monotonic()
    took = stack.start()
    print(f"\nown devstack started in {time.monotonic() - t0:.1f}s: {took}")
    try:
        yield stack
    finally:
        stack.purge()
        shutil.rmtree(parent, ignore_errors=True)


def processes_mentioning(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and marker in cmdline(int(entry.name)):
            pids.append(int(entry.name))
    return pids


async def _produce(bootstrap: str, topic: str, n: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(topic, f"r{i}".encode())
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, n: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got: list[bytes] = []
        async with asyncio.timeout(30):
            while len(got) < n:
                batch = await consumer.getmany(timeout_ms=500)
                got += [m.value for m in batch.get(tp, [])]
        return got
    finally:
        await consumer.stop()


def test_kafka_keeps_a_topics_records_across_stop_and_start(own_stack: Stack) -> None:
    bootstrap = own_stack.env()["REPLAYWATCH_KAFKA_BOOTSTRAP"]
    asyncio.run(_produce(bootstrap, "kept", 50))
    old_pid = own_stack.pid("kafka")
    assert own_stack.stop("kafka") == ["kafka"]
    assert not own_stack.running("kafka")
    own_stack.start("kafka")
    assert own_stack.running("kafka") and own_stack.pid("kafka") != old_pid
    assert asyncio.run(_read_all(bootstrap, "kept", 50)) == [f"r{i}".encode() for i in range(50)]


def test_postgres_keeps_its_data_across_stop_and_start(own_stack: Stack) -> None:
    import asyncpg

    dsn = own_stack.env()["REPLAYWATCH_POSTGRES_DSN"]

    async def write() -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
        await conn.close()

    async def read() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT v FROM kept"))
        finally:
            await conn.close()

    asyncio.run(write())
    own_stack.stop("postgres")
    assert not own_stack.running("postgres")
    own_stack.start("postgres")
    assert asyncio.run(read()) == 7


@pytest.mark.parametrize("client", ["obstore", "aioboto3"])
def test_s3_keeps_its_objects_across_stop_and_start(own_stack: Stack, client: str) -> None:
    """versitygw keeps objects on disk: a diff put before a restart is read back after
    it, byte for byte with its metadata, and putting it again is still a no-op."""
    from replaywatch.compare import Diff, DiffKind
    from replaywatch.config import load_settings
    from replaywatch.runtime.adapters import open_diff_store

    env = own_stack.env()
    settings = load_settings(s3_endpoint=env["REPLAYWATCH_S3_ENDPOINT"], s3_bucket=f"kept-{client}", s3_client=client,
                             s3_access_key_id=env["REPLAYWATCH_S3_ACCESS_KEY_ID"],
                             s3_secret_access_key=env["REPLAYWATCH_S3_SECRET_ACCESS_KEY"])  # fmt: skip
    diff = Diff.of(DiffKind.STRUCTURE, {"run_id": "r", "step_id": "s", "patch": [{"op": "add", "path": "/x"}]})

    async def put() -> None:
        async with open_diff_store(settings, create_bucket=True) as store:
            await store.put(diff, "r", "s")

    async def get() -> tuple[bytes, dict[str, object]]:
        async with open_diff_store(settings, create_bucket=False) as store:
            await store.put(diff, "r", "s")  # already there: no error
            return await store.get(diff.sha256)

    asyncio.run(put())
    old_pid = own_stack.pid("s3")
    assert own_stack.stop("s3") == ["s3"]
    assert not own_stack.running("s3")
    own_stack.start("s3")
    assert own_stack.running("s3") and own_stack.pid("s3") != old_pid
    body, head = asyncio.run(get())
    assert body == diff.body
    assert head["ContentType"] == "application/json"
    assert head["Metadata"] == {"kind": DiffKind.STRUCTURE.value, "run-id": "r", "step-id": "s"}


def test_down_leaves_no_process_behind(own_stack: Stack) -> None:
    pids = {name: own_stack.pid(name) for name in SERVICES}
    assert all(own_stack.running(n) for n in SERVICES)
    assert processes_mentioning(str(own_stack.root))
    assert sorted(own_stack.stop()) == sorted(SERVICES)
    for name, pid in pids.items():
        assert pid is not None
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z", name
    assert processes_mentioning(str(own_stack.root)) == []


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replaywatch", *args], capture_output=True, text=True, env=env, timeout=120
    )


def _one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def test_missing_java_is_one_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"PATH": str(empty), "REPLAYWATCH_DEVSTACK_DIR": str(tmp_path / "st"), "HOME": str(tmp_path)}
    line = _one_line_error(_cli(["devstack", "start", "kafka"], env))
    assert "Java 17+" in line and "install" in line


def test_missing_maven_is_one_clear_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = shutil.which("java")
    assert java
    (bin_dir / "java").symlink_to(java)
    env = {
        "PATH": str(bin_dir),
        "REPLAYWATCH_DEVSTACK_DIR": str(tmp_path / "st"),
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    line = _one_line_error(_cli(["devstack", "start", "kafka"], env))
    assert "Maven (mvn)" in line


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {
            **os.environ,
            "REPLAYWATCH_DEVSTACK_DIR": str(tmp_path / "st"),
            "REPLAYWATCH_DEVSTACK_S3_PORT": str(port),
        }
        line = _one_line_error(_cli(["devstack", "start", "s3"], env))
    assert f"cannot bind 127.0.0.1:{port}" in line
