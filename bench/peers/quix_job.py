"""The same job written with Quix Streams: consume attempt events, keep each step's
projection in Quix's RocksDB state store, compare with replaywatch's pure engine, put
diffs to S3, publish comparison events. Run as its own process by bench/e2e.py.

Usage: python bench/peers/quix_job.py (settings from REPLAYWATCH_* like `replaywatch run`,
plus QUIX_GUARANTEE=at-least-once|exactly-once and QUIX_STATE_DIR).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from typing import Any

import boto3
from botocore.exceptions import ClientError
from quixstreams import Application
from quixstreams.state.rocksdb import RocksDBOptions

from replaywatch import codec
from replaywatch.config import load_settings
from replaywatch.core.projection import StepProjection, apply
from replaywatch.exceptions import BadRecordError
from replaywatch.store.artifacts import object_key, share_endpoint_cache


def main() -> None:
    s = load_settings()
    config = s.compare_config()
    s3 = boto3.client(
        "s3", endpoint_url=s.s3_endpoint, region_name=s.s3_region,
        aws_access_key_id=s.s3_access_key_id.get_secret_value() if s.s3_access_key_id else None,
        aws_secret_access_key=s.s3_secret_access_key.get_secret_value() if s.s3_secret_access_key else None,
    )  # fmt: skip
    share_endpoint_cache(s3)  # the same botocore fix replaywatch applies, so the two pay the same per PUT
    with contextlib.suppress(ClientError):
        s3.create_bucket(Bucket=s.s3_bucket)
    app = Application(
        broker_address=s.kafka_bootstrap,
        consumer_group=s.group_id,
        auto_offset_reset="earliest",
        processing_guarantee=os.environ.get("QUIX_GUARANTEE", "at-least-once"),  # type: ignore[arg-type]
        rocksdb_options=RocksDBOptions(dumps=pickle.dumps, loads=pickle.loads),
        state_dir=os.environ.get("QUIX_STATE_DIR", "/tmp/quix-state"),
        loglevel="WARNING",
    )
    source = app.topic(s.input_topic, value_deserializer="bytes", key_deserializer="bytes")
    sink = app.topic(s.output_topic, value_serializer="bytes", key_serializer="bytes")

    def put_diff(c: Any) -> str:
        key = object_key(c.diff.sha256)
        with contextlib.suppress(ClientError):  # 412: already stored
            s3.put_object(Bucket=s.s3_bucket, Key=key, Body=c.diff.body, ContentType="application/json",
                          Metadata={"kind": c.diff.kind.value}, IfNoneMatch="*")  # fmt: skip
        return f"s3://{s.s3_bucket}/{key}"

    def process(value: bytes, state: Any) -> list[bytes]:
        try:
            a = codec.parse_attempt(codec.read_attempt(value), documents=True)  # as replaywatch's pipeline reads
        except BadRecordError:
            return []
        proj = state.get(a.step_id) or StepProjection.empty(a.run_id, a.step_id)
        proj, comparisons = apply(proj, a, config)
        state.set(a.step_id, proj)
        out = []
        now = int(time.time() * 1000)
        for c in comparisons:
            uri = put_diff(c) if c.diff else None
            rec = codec.comparison_record(c, diff_uri=uri, source=(s.input_topic, -1, -1),
                                          occurred_at_ms=a.occurred_at_ms, detected_at_ms=now)  # fmt: skip
            out.append(codec.encode_comparison(rec))
        return out

    sdf = app.dataframe(source)
    sdf = sdf.apply(process, stateful=True, expand=True)
    sdf.to_topic(sink)
    app.run()


if __name__ == "__main__":
    main()
