"""/readyz of `replaywatch run` turns unready while PostgreSQL is stopped and records
wait, and ready again once it is back; /healthz stays 200 throughout."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import aiohttp
import pytest

from replaywatch import demo
from replaywatch.devstack import Stack
from tests.conftest import Endpoints
from tests.integration.streaming import Lane, spawn_run, stop_proc

pytestmark = pytest.mark.faults


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def probe(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return resp.status, await resp.json()
    except (aiohttp.ClientError, TimeoutError):
        return 0, None


async def until(http: aiohttp.ClientSession, url: str, status: int, seconds: float) -> list[tuple[int, Any]]:
    """Poll ``url`` until it answers ``status``; what it answered on the way."""
    seen = []
    async with asyncio.timeout(seconds):
        while True:
            got = await probe(http, url)
            seen.append(got)
            if got[0] == status:
                return seen
            await asyncio.sleep(0.2)


async def test_readyz_follows_postgres(endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str) -> None:
    lane = Lane(endpoints, pg_schema, bucket)
    await lane.create_topics()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = spawn_run({**os.environ, **lane.env, "REPLAYWATCH_HTTP_PORT": str(port),
                      "REPLAYWATCH_READY_STALL_SECONDS": "2", "REPLAYWATCH_LOG_LEVEL": "INFO"})  # fmt: skip
    spec = demo.FleetSpec(runs=30, steps=2, attempts=2, seed=5)
    first, later = (
        demo.synthetic_fleet(spec),
        demo.synthetic_fleet(demo.FleetSpec(runs=30, steps=2, attempts=2, seed=6)),
    )
    try:
        async with aiohttp.ClientSession() as http:
            await until(http, f"{base}/readyz", 200, 60)  # joined, partitions assigned
            await lane.send(first)
            await lane.committed_past(len(first) - 1)
            await asyncio.to_thread(stack.stop, "postgres")
            try:
                await lane.send(later)  # records wait, nothing can commit
                seen = await until(http, f"{base}/readyz", 503, 60)
                assert "stalled" in seen[-1][1]["reason"], seen[-1]
                assert (await probe(http, f"{base}/healthz"))[0] == 200
            finally:
                await asyncio.to_thread(stack.start, "postgres")
            await until(http, f"{base}/readyz", 200, 60)
            await lane.committed_past(len(first) + len(later) - 1, timeout=60)
            assert (await probe(http, f"{base}/readyz"))[0] == 200
    finally:
        code, _ = stop_proc(proc)
    assert code == 0
