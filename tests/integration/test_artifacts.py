"""Diff objects in S3: content-addressed, and a second put of a sha is a no-op."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from replaywatch.compare import Diff, DiffKind
from replaywatch.store.artifacts import S3Artifacts, object_key
from tests.conftest import Endpoints

pytestmark = pytest.mark.integration


async def test_put_is_content_addressed_and_idempotent(endpoints: Endpoints, bucket: str) -> None:
    diff = Diff.of(DiffKind.TOOL, {"run_id": "r", "step_id": "s", "recorded": [1], "current": [2]})
    async with S3Artifacts.open(bucket=bucket, endpoint=endpoints.s3_endpoint, region=endpoints.s3_region,
                                access_key_id=endpoints.s3_access_key_id,
                                secret_access_key=endpoints.s3_secret_access_key) as store:  # fmt: skip
        uri = await store.put(diff, "r", "s")
        assert uri == f"s3://{bucket}/{object_key(diff.sha256)}"
        head1 = await store._s3.head_object(Bucket=bucket, Key=object_key(diff.sha256))
        assert await store.put(diff, "r", "s") == uri  # already there: no error, no rewrite
        head2 = await store._s3.head_object(Bucket=bucket, Key=object_key(diff.sha256))
        assert head1["ETag"] == head2["ETag"] and head1["LastModified"] == head2["LastModified"]
        body, meta = await store.get(diff.sha256)
        assert hashlib.sha256(body).hexdigest() == diff.sha256
        assert meta["ContentType"] == "application/json"
        assert meta["Metadata"] == {"kind": "replay_tool_diff", "run-id": "r", "step-id": "s"}


async def test_non_ascii_ids_are_encoded_in_metadata(endpoints: Endpoints, bucket: str) -> None:
    diff = Diff.of(DiffKind.ATTESTATION, {"run_id": "rün-😀", "step_id": "ステップ"})
    async with S3Artifacts.open(bucket=bucket, endpoint=endpoints.s3_endpoint, region=endpoints.s3_region,
                                access_key_id=endpoints.s3_access_key_id,
                                secret_access_key=endpoints.s3_secret_access_key) as store:  # fmt: skip
        await store.put(diff, "rün-😀", "ステップ")
        _, meta = await store.get(diff.sha256)
        assert meta["Metadata"]["run-id"] == "r%C3%BCn-%F0%9F%98%80"


async def test_uploads_in_flight_keep_their_connections(
    endpoints: Endpoints, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 PUTs in flight (REPLAYWATCH_S3_CONCURRENCY's default) reuse 16 connections: the
    local S3 keeps them alive (cheroot closed all but 10 of them by default, and then
    every other PUT paid a new TCP connection)."""
    connects = 0
    original = asyncio.BaseEventLoop.create_connection

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal connects
        connects += 1
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", counted)
    slots = asyncio.Semaphore(16)
    async with S3Artifacts.open(bucket=bucket, endpoint=endpoints.s3_endpoint, region=endpoints.s3_region,
                                access_key_id=endpoints.s3_access_key_id,
                                secret_access_key=endpoints.s3_secret_access_key) as store:  # fmt: skip

        async def put(i: int) -> None:
            async with slots:
                await store.put(Diff.of(DiffKind.TOOL, {"run_id": "r", "step_id": f"s{i}"}), "r", f"s{i}")

        connects = 0
        await asyncio.gather(*(put(i) for i in range(300)))
    assert connects <= 16
