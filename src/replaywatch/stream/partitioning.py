"""Which output partition an event's key goes to: Kafka's default partitioner
(murmur2 of the key, as the Java client and aiokafka's ``DefaultPartitioner``), with
the answer kept per key. A run's events share its key, so most keys come again; the
pure-Python murmur2 then runs once per run instead of once per event."""

from __future__ import annotations

import random
from typing import Final

from aiokafka.partitioner import DefaultPartitioner

KEPT: Final = 65_536
"""Keys remembered at most (all are forgotten at once past it)."""


class KeyPartitions:
    """The partition of each key over ``partitions`` (the topic's, sorted)."""

    __slots__ = ("_by_key", "_partitioner", "partitions")

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions
        self._partitioner = DefaultPartitioner()
        self._by_key: dict[bytes, int] = {}

    def of(self, key: bytes | None) -> int:
        if key is None:  # as the producer does: any partition
            return random.choice(self.partitions)
        p = self._by_key.get(key)
        if p is None:
            if len(self._by_key) >= KEPT:
                self._by_key.clear()
            p = self._by_key[key] = self._partitioner(key, self.partitions, self.partitions)
        return p
