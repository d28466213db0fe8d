"""The output topic's size limit: a topic just created and not yet visible is transient."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from replaywatch.exceptions import ConfigError, TransientError
from replaywatch.stream.topics import max_message_bytes


class Admin:
    def __init__(self, error_code: int, entries: list[Any] | None = None) -> None:
        self.error_code, self.entries = error_code, entries or []

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        return [SimpleNamespace(resources=[(self.error_code, "message", 2, "t", self.entries)])]


async def test_the_limit_is_read() -> None:
    assert await max_message_bytes(Admin(0, [("max.message.bytes", "2097152")]), "t") == 2097152


async def test_a_topic_not_visible_yet_is_transient_and_other_errors_stop() -> None:
    with pytest.raises(TransientError, match="not visible yet"):
        await max_message_bytes(Admin(3), "t")
    with pytest.raises(ConfigError, match="cannot read the configuration of topic 't': 29"):
        await max_message_bytes(Admin(29), "t")
