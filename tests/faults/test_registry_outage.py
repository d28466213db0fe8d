"""[registry] A registry outage: records whose writer schema cannot be fetched wait, and
none of them is dead-lettered; once the registry answers again they are all compared."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from confluent_kafka.serialization import MessageField, SerializationContext

from replaywatch import codec
from tests.conftest import Endpoints
from tests.integration.streaming import Lane
from tests.registry_clients import client, serializer
from tests.tcp_proxy import TcpProxy, close_all

pytestmark = [pytest.mark.integration, pytest.mark.faults]


class Switch(TcpProxy):
    """A proxy that can be cut: down, it closes every connection and every new one."""

    def __init__(self, target_port: int) -> None:
        self.up = threading.Event()
        self.up.set()
        self.refused = 0
        self._open: set[socket.socket] = set()
        super().__init__(target_port)

    def upstream(self, src: socket.socket, dst: socket.socket, state: Any) -> None:
        if not self.up.is_set():
            self.refused += 1
            close_all(src, dst)
            return
        self._open |= {src, dst}
        super().upstream(src, dst, state)

    def down(self) -> None:
        self.up.clear()
        close_all(*self._open)
        self._open.clear()


async def test_records_wait_for_the_registry_and_none_is_dead_lettered(
    endpoints: Endpoints, pg_schema: str, bucket: str
) -> None:
    real = urlsplit(endpoints.schema_registry_url)
    assert real.port, "the devstack's env names REPLAYWATCH_SCHEMA_REGISTRY_URL"
    proxy = Switch(real.port)
    lane = Lane(endpoints, pg_schema, bucket, registry=True,
                extra={"schema_registry_url": f"http://127.0.0.1:{proxy.port}{real.path}"})  # fmt: skip
    s = lane.settings()
    serialize = serializer(client(endpoints.schema_registry_url), codec.schema_text(codec.ATTEMPT_SCHEMA))
    ctx = SerializationContext(s.input_topic, MessageField.VALUE)
    values = [
        serialize({"event_id": str(uuid.uuid4()), "run_id": f"run-{lane.tag}-{r}", "step_id": "s", "attempt": n,
                   "status": "succeeded", "occurred_at": 1_790_000_000_000 + n,
                   "output_snapshot": orjson.dumps({"tokens": 100 + n}).decode()}, ctx)
        for r in range(20) for n in (1, 2)
    ]  # fmt: skip
    await lane.create_topics()
    try:
        async with lane.pipeline() as pipeline:  # starts with the registry up: the output schema is registered
            proxy.down()
            await lane.send(values, key=b"one-partition")
            async with asyncio.timeout(60):  # the consumer has read them and asked the registry, in vain, again
                while proxy.refused < 3:
                    await asyncio.sleep(0.05)
            assert await lane.stored_total() == 0  # nothing committed: the records wait
            assert pipeline.checkpoint.processed == 0
            proxy.up.set()
            out = await lane.outputs(want=20)
        dead = await lane.read(s.dlq_topic, want=0, settle=1.0, timeout=5)
    finally:
        proxy.close()
    assert len(out) == 20 and {e["verdict"] for e in out} == {"drift"}
    assert dead == []
    assert await lane.stored_total() == len(values)
