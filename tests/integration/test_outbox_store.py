"""The outbox as PostgreSQL keeps it: a read is bounded in event bytes (at least one
row, whatever its size), and the publisher's position survives with the delete of what
was published and never goes back."""

from __future__ import annotations

import uuid

import pytest

from replaywatch.store.postgres import PostgresStore

pytestmark = pytest.mark.integration

MB = 1024 * 1024


async def test_an_outbox_read_is_bounded_in_bytes_and_the_position_is_kept(
    migrated_store: PostgresStore, pg_schema: str
) -> None:
    store = migrated_store
    sizes = [3 * MB, 3 * MB, 20 * MB, 1 * MB, 10, 10]
    async with store._pool.acquire() as conn:
        await conn.executemany(
            f'INSERT INTO "{pg_schema}".outbox (group_id, topic, partition, source_offset, event_id, key, value, '
            "verdict) VALUES ('g', 't', 0, $1, $2, NULL, $3, 'drift')",
            [(i, uuid.uuid4(), bytes([i]) * n) for i, n in enumerate(sizes)],
        )
    got = [len(r.value) for r in await store.outbox_fetch(0, 0, 100, 100, max_bytes=4 * MB)]
    assert got == sizes[:2]  # the second row crosses 4 MB: it is the last
    got = [r.source_offset for r in await store.outbox_fetch(0, 2, 100, 100, max_bytes=4 * MB)]
    assert got == [2]  # one row larger than the bound still comes alone
    got = [r.source_offset for r in await store.outbox_fetch(0, 3, 100, 2, max_bytes=4 * MB)]
    assert got == [3, 4]  # the row limit holds too
    assert [r.source_offset for r in await store.outbox_fetch(0, 3, 5, 100, max_bytes=4 * MB)] == [3, 4]

    assert await store.publisher_position(0) is None
    await store.outbox_delete_before(0, 3)
    await store.outbox_delete_before(0, 2)  # an older position never moves it back
    assert await store.publisher_position(0) == 3
    assert [r.source_offset for r in await store.outbox_fetch(0, 0, 100, 100)] == [3, 4, 5]
