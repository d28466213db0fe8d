"""Diff objects in S3, through either client (obstore, the default, and aioboto3):
content-addressed, a second put of a sha is a no-op, and S3's refusals are sorted into
what the pipeline does about them."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from replaywatch.compare import Diff, DiffKind
from replaywatch.config import load_settings
from replaywatch.exceptions import ServiceRefused, TransientError
from replaywatch.ports import DiffStore
from replaywatch.runtime.adapters import open_diff_store
from replaywatch.store.artifacts import S3Artifacts, S3Target, object_key
from tests.conftest import Endpoints, s3_client

pytestmark = pytest.mark.integration

Opener = Callable[..., AbstractAsyncContextManager[DiffStore]]


@pytest.fixture(params=["obstore", "aioboto3"])
def open_store(request: pytest.FixtureRequest, endpoints: Endpoints) -> Opener:
    """``open_store(bucket, **settings)``: the diff store of that client, as ``run`` opens it."""

    def make(bucket: str, **overrides: Any) -> AbstractAsyncContextManager[DiffStore]:
        given: dict[str, Any] = {
            "s3_endpoint": endpoints.s3_endpoint, "s3_region": endpoints.s3_region, "s3_bucket": bucket,
            "s3_access_key_id": endpoints.s3_access_key_id, "s3_secret_access_key": endpoints.s3_secret_access_key,
            "s3_client": request.param,
        }  # fmt: skip
        check = overrides.pop("check_bucket", True)
        create = overrides.pop("create_bucket", False)
        return open_diff_store(load_settings(**(given | overrides)), check_bucket=check, create_bucket=create)

    return make


async def _head(endpoints: Endpoints, bucket: str, key: str) -> dict[str, Any]:
    async with s3_client(endpoints) as s3:
        head: dict[str, Any] = await s3.head_object(Bucket=bucket, Key=key)
        return head


async def test_put_is_content_addressed_and_idempotent(open_store: Opener, endpoints: Endpoints, bucket: str) -> None:
    diff = Diff.of(DiffKind.TOOL, {"run_id": "r", "step_id": "s", "recorded": [1], "current": [2]})
    async with open_store(bucket) as store:
        uri = await store.put(diff, "r", "s")
        assert uri == f"s3://{bucket}/{object_key(diff.sha256)}"
        head1 = await _head(endpoints, bucket, object_key(diff.sha256))
        assert await store.put(diff, "r", "s") == uri  # already there: no error, no rewrite
        head2 = await _head(endpoints, bucket, object_key(diff.sha256))
        assert head1["ETag"] == head2["ETag"] and head1["LastModified"] == head2["LastModified"]
        body, meta = await store.get(diff.sha256)
        assert hashlib.sha256(body).hexdigest() == diff.sha256
        assert meta["ContentType"] == "application/json"
        assert meta["Metadata"] == {"kind": "replay_tool_diff", "run-id": "r", "step-id": "s"}


async def test_racing_puts_of_one_sha_all_succeed(open_store: Opener, bucket: str) -> None:
    """Two consumers (a rebalance) upload the same diff at once: one put wins, the others
    are told "already there" (412, or 409 while the first is in progress): none fails."""
    diff = Diff.of(DiffKind.STRUCTURE, {"run_id": "r", "step_id": "race", "patch": []})
    async with open_store(bucket) as store:
        uris = await asyncio.gather(*(store.put(diff, "r", "race") for _ in range(16)))
        assert set(uris) == {store.uri(diff.sha256)}
        body, _ = await store.get(diff.sha256)
        assert body == diff.body


async def test_non_ascii_ids_are_encoded_in_metadata(open_store: Opener, bucket: str) -> None:
    diff = Diff.of(DiffKind.ATTESTATION, {"run_id": "rün-😀", "step_id": "ステップ"})
    async with open_store(bucket) as store:
        await store.put(diff, "rün-😀", "ステップ")
        _, meta = await store.get(diff.sha256)
        assert meta["Metadata"]["run-id"] == "r%C3%BCn-%F0%9F%98%80"


async def test_processes_starting_together_both_create_the_bucket(open_store: Opener, unique: str) -> None:
    """Two consumers of one group start at once with --create-bucket: both see no
    bucket and both create it; the one that loses the race is told it already owns it,
    which is not an error."""
    name = f"rw-race-{unique}"

    async def start() -> None:
        async with open_store(name, create_bucket=True):
            pass

    await asyncio.gather(*(start() for _ in range(4)))
    diff = Diff.of(DiffKind.TOOL, {"run_id": "r", "step_id": "raced"})
    async with open_store(name) as store:
        assert await store.put(diff, "r", "raced") == store.uri(diff.sha256)


async def test_a_missing_bucket_stops_with_one_message(open_store: Opener, unique: str) -> None:
    with pytest.raises(ServiceRefused, match="does not exist; create it or run with --create-bucket"):
        async with open_store(f"rw-missing-{unique}"):
            pass
    diff = Diff.of(DiffKind.TOOL, {"run_id": "r", "step_id": "gone"})
    async with open_store(f"rw-missing-{unique}", check_bucket=False) as store:  # deleted while running
        with pytest.raises(ServiceRefused, match=r"does not exist|NoSuchBucket"):
            await store.put(diff, "r", "gone")


async def test_wrong_credentials_are_refused_not_retried(open_store: Opener, bucket: str) -> None:
    diff = Diff.of(DiffKind.TOOL, {"run_id": "r", "step_id": "creds"})
    # the check at start is skipped here: the put itself must say it
    async with open_store(bucket, s3_secret_access_key="wrong-secret", check_bucket=False) as store:
        with pytest.raises(ServiceRefused, match="credentials"):
            await store.put(diff, "r", "creds")


async def test_an_unreachable_s3_is_transient(open_store: Opener, bucket: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    diff = Diff.of(DiffKind.TOOL, {"run_id": "r", "step_id": "down"})
    async with open_store(bucket, s3_endpoint=f"http://127.0.0.1:{port}", check_bucket=False) as store:
        with pytest.raises(TransientError):
            await store.put(diff, "r", "down")


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
    target = S3Target(
        bucket=bucket,
        endpoint=endpoints.s3_endpoint,
        region=endpoints.s3_region,
        access_key_id=endpoints.s3_access_key_id,
        secret_access_key=endpoints.s3_secret_access_key,
    )
    async with S3Artifacts.open(target) as store:

        async def put(i: int) -> None:
            async with slots:
                await store.put(Diff.of(DiffKind.TOOL, {"run_id": "r", "step_id": f"s{i}"}), "r", f"s{i}")

        connects = 0
        await asyncio.gather(*(put(i) for i in range(300)))
    assert connects <= 16
