"""asyncpg's errors become the error tree, by kind and SQLSTATE class."""

from __future__ import annotations

import asyncpg
import pytest

from replaywatch.exceptions import Fenced, RecordRejected, ServiceRefused, TransientError
from replaywatch.store.errors import translate_postgres_errors


def postgres_error(sqlstate: str) -> asyncpg.PostgresError:
    cls = asyncpg.PostgresError
    for sub in asyncpg.PostgresError.__subclasses__():
        if getattr(sub, "sqlstate", None) == sqlstate:
            cls = sub
    error = cls.new({"C": sqlstate, "M": "message"}) if hasattr(cls, "new") else cls("message")
    error.sqlstate = sqlstate  # type: ignore[misc]
    return error


@pytest.mark.parametrize(
    ("raised", "becomes"),
    [
        (
            asyncpg.InternalClientError("cannot switch to state 12"),
            TransientError,
        ),
        (asyncpg.ProtocolError("unexpected message"), TransientError),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), TransientError),
        (ConnectionRefusedError(111, "refused"), TransientError),
        (postgres_error("RW001"), Fenced),
        (postgres_error("23514"), RecordRejected),
        (postgres_error("54000"), RecordRejected),
        (postgres_error("42501"), ServiceRefused),
        (postgres_error("57P01"), TransientError),
    ],
)
async def test_each_kind_of_error_lands_on_its_branch(raised: BaseException, becomes: type[BaseException]) -> None:
    with pytest.raises(becomes):
        async with translate_postgres_errors("a test"):
            raise raised
