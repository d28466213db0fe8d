"""The rates' clocks of the partitions (``rates.tally.Clock``): loaded a partition at a
time, then moved in place by each batch prepared, in input order.

As with the envelopes, batch N+1 is counted on top of batch N's clocks before N
commits, and each batch takes the clocks it moved along as JSON; a write that does not
commit voids every batch after it, and the clocks of the partitions it touched are read
again from PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable

from replaywatch.ports import RateClockStore
from replaywatch.rates.tally import Clock


class Clocks:
    def __init__(self, store: RateClockStore) -> None:
        self._store = store
        self._live: dict[int, Clock] = {}
        self._loaded: set[int] = set()

    async def load(self, partitions: Iterable[int]) -> dict[int, Clock]:
        """The clocks, with every one of ``partitions`` loaded: the mapping a batch moves."""
        if missing := set(partitions) - self._loaded:
            stored = await self._store.load_rate_clocks(sorted(missing))
            for p in missing:
                self._live[p] = stored.get(p, Clock())
            self._loaded |= missing
        return self._live

    def void(self, partitions: set[int]) -> None:
        """Read ``partitions``' clocks again when next needed."""
        self._loaded -= partitions
        for p in partitions:
            self._live.pop(p, None)
