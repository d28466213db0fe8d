"""asyncpg's errors translated into replaywatch's error tree, by SQLSTATE class:
connection trouble and contention are ``TransientError``; a refusal of the data
(classes 22, 23, 54: bad values, constraints, limits) is ``RecordRejected``; a refusal
of replaywatch itself (authorization, a missing schema or table) is
``ServiceRefused``; the fence of ``commit_batch`` (RW001) is ``Fenced``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from replaywatch.exceptions import (
    EnvelopesActedOn,
    Fenced,
    RecordRejected,
    ServiceRefused,
    StaleProjection,
    TransientError,
)

_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    # the client's own connection state broke (a server that went away mid-operation:
    # "cannot switch to state 12; another operation is in progress"); ProtocolError is one
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


REFUSED_DATA = ("22", "23", "54")
"""SQLSTATE classes of a refusal of the data: data exception, integrity constraint
violation, program limit exceeded."""
_REFUSED_SERVICE = ("28", "3D", "3F", "42")
"""SQLSTATE classes of a refusal of replaywatch: authorization, a missing database or
schema, access rules and missing objects (42: undefined table or function, no privilege)."""


@contextlib.asynccontextmanager
async def translate_postgres_errors(what: str) -> AsyncIterator[None]:
    """asyncpg's errors -> the error tree, by SQLSTATE class."""
    try:
        yield
    except Exception as exc:
        state = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
        # commit_batch raises SQLSTATE RW001, which asyncpg does not know: it arrives
        # as UnknownPostgresError, not as RaiseError
        if state == "RW001":
            raise Fenced(str(exc)) from None
        if state == "RW002":
            raise StaleProjection(str(exc)) from None
        if state == "RW003":
            raise EnvelopesActedOn(str(exc)) from None
        if isinstance(exc, _TRANSIENT):
            raise TransientError(f"PostgreSQL unavailable during {what}: {type(exc).__name__}: {exc}") from exc
        if state is not None and state[:2] in REFUSED_DATA:
            raise RecordRejected(f"PostgreSQL refused the rows during {what}: {state} {exc}") from exc
        if state is not None and state[:2] in _REFUSED_SERVICE:
            raise ServiceRefused(
                f"PostgreSQL refused {what}: {state} {exc}; check the DSN's user, its privileges on the schema, "
                "and that `replaywatch migrate` ran"
            ) from exc
        if isinstance(exc, asyncpg.PostgresError):  # resources, shutdown, internal errors: may pass
            raise TransientError(f"PostgreSQL failed during {what}: {state} {type(exc).__name__}: {exc}") from exc
        raise
