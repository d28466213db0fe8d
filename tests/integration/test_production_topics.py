"""[helm] Production topics and buckets: ``run`` creates them only when asked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.conftest import Endpoints
from tests.integration.streaming import Lane

pytestmark = pytest.mark.integration


@pytest.fixture
def lane(endpoints: Endpoints, pg_schema: str, bucket: str) -> Lane:
    return Lane(endpoints, pg_schema, bucket)


def run(lane: Lane, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "replaywatch", "run", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **lane.env, **env})  # fmt: skip


async def test_a_missing_topic_stops_run_with_one_line_unless_asked(lane: Lane) -> None:
    s = lane.settings()
    missing = run(lane, REPLAYWATCH_CREATE_TOPICS="false")
    assert missing.returncode != 0
    errors = [line for line in missing.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        f"replaywatch: error: topic(s) {s.input_topic}, {s.output_topic}, {s.dlq_topic}, {s.rates_topic}, "
        f"{s.alerts_topic} do not exist on "
        f"{s.kafka_bootstrap}; create them (max.message.bytes >= 16777216 for the output and dead-letter topics) "
        "or run with --create-topics (REPLAYWATCH_CREATE_TOPICS=true)"
    ], missing.stderr


async def test_a_missing_bucket_stops_run_with_one_line_unless_asked(lane: Lane) -> None:
    await lane.create_topics()
    missing = run(lane, REPLAYWATCH_CREATE_BUCKET="false", REPLAYWATCH_S3_BUCKET=f"absent-{lane.tag}")
    assert missing.returncode != 0
    assert [line for line in missing.stderr.splitlines() if "error" in line.lower()] == [
        f"replaywatch: error: bucket 'absent-{lane.tag}' does not exist; create it or run with --create-bucket "
        "(REPLAYWATCH_CREATE_BUCKET=true)"
    ], missing.stderr


async def test_created_topics_carry_replication_settings(lane: Lane) -> None:
    async with lane.pipeline():  # the lane asks: --create-topics, replication factor 1, min.insync.replicas 1
        pass
    s = lane.settings()
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.output_topic, {"min.insync.replicas": None})]
        )
    finally:
        await admin.close()
    entries = {e[0]: e for r in described for res in r.resources for e in res[4]}
    _name, value, _read_only, source, *_ = entries["min.insync.replicas"]
    assert value == "1" and source == 1  # 1: DYNAMIC_TOPIC_CONFIG, set on the topic at its creation
