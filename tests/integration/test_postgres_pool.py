"""The store's connection pool: a released connection is not reset with a statement
(the store keeps no session state), and an open transaction is still rolled back."""

from __future__ import annotations

import pytest

from replaywatch.store.postgres import PostgresStore
from tests.conftest import Endpoints

pytestmark = pytest.mark.integration


async def test_released_connections_skip_the_reset_statement_and_lose_open_transactions(
    endpoints: Endpoints, pg_schema: str
) -> None:
    store = await PostgresStore.connect(endpoints.postgres_dsn, schema=pg_schema, group_id="g", topic="t", pool_size=1)
    pool = store._pool
    try:
        async with pool.acquire() as conn:
            await conn.execute(f'CREATE TABLE "{pg_schema}".kept (v int)')
            await conn.execute("SET application_name = 'replaywatch-probe'")
        async with pool.acquire() as conn:  # the pool's only connection, again
            assert await conn.fetchval("SHOW application_name") == "replaywatch-probe"  # no RESET ALL ran
            await conn.execute("BEGIN")
            await conn.execute(f'INSERT INTO "{pg_schema}".kept VALUES (1)')
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval(f'SELECT count(*) FROM "{pg_schema}".kept') == 0
    finally:
        await store.close()
