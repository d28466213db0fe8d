"""S3 answering 400 ``RequestTimeout`` (and ``ExpiredToken``) for a while, as S3 does
for an idle upload or a token that expired before its refresh: the diffs are retried,
nothing is dead-lettered, and every comparison is published once with its diff stored.

The real versitygw sits behind an HTTP proxy of this test that answers the diff PUTs
with those 400s until told to stop; everything else is forwarded as it came (the Host
header too, so that the clients' signatures still verify)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections import Counter

import aiohttp
import pytest
from aiohttp import web

from replaywatch import demo
from replaywatch.devstack import Stack
from replaywatch.store.artifacts import object_key
from tests.conftest import Endpoints, s3_client
from tests.faults.harness import expected_for
from tests.integration.streaming import Lane, stop_proc

pytestmark = pytest.mark.faults

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class RefusingProxy:
    """Answers diff PUTs with a transient 400 while ``refusing``; forwards the rest."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.refusing = True
        self.refused: Counter[str] = Counter()
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.refusing and request.method == "PUT" and "/sha256/" in request.path:
            code = "RequestTimeout" if sum(self.refused.values()) % 2 == 0 else "ExpiredToken"
            self.refused[code] += 1
            xml = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>try again</Message></Error>"
            return web.Response(status=400, body=xml.encode(), content_type="application/xml")
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self.session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                        data=body, allow_redirects=False) as resp:  # fmt: skip
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=resp.status, body=payload, headers=out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_s3_400_request_timeout_is_retried_and_nothing_is_lost(
    endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str
) -> None:
    proxy = RefusingProxy(endpoints.s3_endpoint)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    proxy.session = aiohttp.ClientSession(auto_decompress=False)
    lane = Lane(dataclasses.replace(endpoints, s3_endpoint=f"http://127.0.0.1:{port}"), pg_schema, bucket)
    events = demo.synthetic_fleet(demo.FleetSpec(runs=40, steps=3, attempts=3, drift=0.3, seed=41))
    expected = expected_for(events, lane)
    proc = lane.spawn()
    try:
        await lane.send(events)
        async with asyncio.timeout(60):  # the diffs are refused, and retried, for a while
            while sum(proxy.refused.values()) < 6:
                await asyncio.sleep(0.1)
        proxy.refusing = False
        await lane.committed_past(len(events) - 1, timeout=120)
        outputs = await lane.outputs(want=len(expected), timeout=60)
        dead = await lane.read(lane.settings().dlq_topic, want=0, timeout=3)
    finally:
        code, _ = stop_proc(proc)
        await proxy.session.close()
        await runner.cleanup()
    assert code == 0
    assert proxy.refused["RequestTimeout"] >= 3 and proxy.refused["ExpiredToken"] >= 3
    assert dead == []
    ids = Counter(o["event_id"] for o in outputs)
    assert set(ids) == set(expected) and set(ids.values()) == {1}
    diffs = {o["diff_sha256"] for o in outputs if o["diff_sha256"]}
    assert diffs
    async with s3_client(endpoints) as s3:
        for sha in diffs:
            got = await s3.head_object(Bucket=bucket, Key=object_key(sha))
            assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
