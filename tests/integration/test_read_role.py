"""The web view's PostgreSQL role: ``replaywatch migrate --grant-read ROLE`` lets it read
replaywatch's schema and nothing more (the chart's migrate job does it)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.conftest import Endpoints

pytestmark = pytest.mark.integration


async def test_the_read_role_reads_and_cannot_write(endpoints: Endpoints, pg_schema: str) -> None:
    role, password = f"reader_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = await asyncpg.connect(endpoints.postgres_dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        env = {
            **os.environ,
            "REPLAYWATCH_POSTGRES_DSN": endpoints.postgres_dsn,
            "REPLAYWATCH_POSTGRES_SCHEMA": pg_schema,
        }
        done = subprocess.run([sys.executable, "-m", "replaywatch", "migrate", "--grant-read", role], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"role {role} may read schema {pg_schema}" in done.stderr
        parts = urlsplit(endpoints.postgres_dsn)
        dsn = urlunsplit(parts._replace(netloc=f"{role}:{password}@{parts.hostname}:{parts.port}"))
        reader = await asyncpg.connect(dsn)
        try:
            assert await reader.fetchval(f'SELECT count(*) FROM "{pg_schema}".comparison') == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.execute(f'DELETE FROM "{pg_schema}".outbox')
        finally:
            await reader.close()
        bad = subprocess.run([sys.executable, "-m", "replaywatch", "migrate", "--grant-read", "x; DROP"], env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert bad.returncode != 0 and "plain lower-case identifier" in bad.stderr
    finally:
        await admin.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
        await admin.close()
