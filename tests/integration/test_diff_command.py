"""[ux] ``replaywatch diff`` against the objects the pipeline wrote."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid

import orjson
import pytest

from replaywatch.store.artifacts import object_key
from tests.conftest import Endpoints, s3_client
from tests.integration.streaming import Lane
from tests.integration.streaming import attempt_event as attempt

pytestmark = pytest.mark.integration


def rw_diff(lane: Lane, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "replaywatch", "diff", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **lane.env, "COLUMNS": "80", **env})  # fmt: skip


@pytest.fixture
def lane(endpoints: Endpoints, pg_schema: str, bucket: str) -> Lane:
    return Lane(endpoints, pg_schema, bucket)


async def test_diff_shows_what_the_pipeline_stored(lane: Lane) -> None:
    run = f"run-{lane.tag}"
    events = [
        attempt(run, "structure", 1, {"answer": {"city": "Paris", "confidence": 0.9}, "tokens": 10}),
        attempt(run, "structure", 2, {"answer": {"city": "Lyon", "confidence": 0.9}, "note": "x", "tokens": 10}),
        attempt(run, "attest", 1, {"attestation_ids": ["att-a", "att-b"]}),
        attempt(run, "attest", 2, {"attestation_ids": ["att-b", "att-c"]}),
        attempt(run, "tools", 1, {}, [{"tool": "search", "args": {"q": "paris"}}, {"tool": "fetch"}]),
        attempt(run, "tools", 2, {}, [{"tool": "search", "args": {"q": "lyon"}}, {"tool": "fetch"}, {"tool": "write"}]),
    ]
    await lane.create_topics()
    await lane.send(events)
    async with lane.pipeline():
        out = {e["step_id"]: e for e in await lane.outputs(want=3)}

    structure = rw_diff(lane, out["structure"]["diff_sha256"])
    assert structure.returncode == 0, structure.stderr
    text = " ".join(structure.stdout.split())
    assert text.startswith(f"structure changed · run run-{lane.tag} · step structure")
    assert '~ /answer/city - "Paris" + "Lyon"' in text and '+ /note + "x"' in text
    assert max(len(line) for line in structure.stdout.splitlines()) <= 80

    by_event = rw_diff(lane, out["attest"]["event_id"])  # an alert that carries the event id
    assert by_event.returncode == 0, by_event.stderr
    assert "- att-a" in by_event.stdout.splitlines() and "+ att-c" in by_event.stdout.splitlines()

    tools = " ".join(rw_diff(lane, out["tools"]["diff_sha256"]).stdout.split())
    assert '~ search at position 0: /args/q - "paris" + "lyon"' in tools
    assert '+ write at position 2 + {"tool":"write"}' in tools

    raw = rw_diff(lane, "--json", out["tools"]["diff_sha256"])
    async with s3_client(lane.endpoints) as s3:
        stored = await (await s3.get_object(Bucket=lane.bucket, Key=object_key(out["tools"]["diff_sha256"])))[
            "Body"
        ].read()
    assert orjson.loads(raw.stdout) == orjson.loads(stored)


async def test_diff_says_what_is_wrong_with_a_distinct_status(lane: Lane) -> None:
    await lane.create_topics()
    async with lane.pipeline():  # migrated schema, bucket made
        pass
    missing = rw_diff(lane, "0" * 64)
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1 and "no diff object" in missing.stderr
    unknown_event = rw_diff(lane, str(uuid.uuid4()))
    assert unknown_event.returncode == 3 and "no comparison" in unknown_event.stderr

    body = b'{"patch": []}'
    wrong_name = hashlib.sha256(b"something else").hexdigest()
    async with s3_client(lane.endpoints) as s3:
        await s3.put_object(Bucket=lane.bucket, Key=object_key(wrong_name), Body=body)
    corrupt = rw_diff(lane, wrong_name)
    assert corrupt.returncode == 4 and "is corrupt" in corrupt.stderr

    unreachable = rw_diff(lane, "1" * 64, REPLAYWATCH_S3_ENDPOINT="http://127.0.0.1:9")
    assert unreachable.returncode == 5 and unreachable.stderr.startswith("replaywatch: error: S3 could not be reached")
    assert unreachable.stderr.count("\n") == 1
