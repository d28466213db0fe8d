"""The projections a batch starts from: those of batches prepared and not yet committed
(the overlay), else the committed ones in the step cache, else one query to the store.

Batch N+1 is prepared while batch N commits, on top of N's projections; they stay in
the overlay, tagged with N's sequence number, until N commits (then they move to the
cache) or is thrown away (a fence or a rewind clears the overlay).
"""

from __future__ import annotations

from replaywatch.compare import CompareConfig
from replaywatch.core.projection import StepProjection
from replaywatch.core.types import StepKey
from replaywatch.ports import ProjectionStore
from replaywatch.state.cache import StepCache


class Projections:
    def __init__(self, cache: StepCache, store: ProjectionStore, config: CompareConfig) -> None:
        self.cache = cache
        self._store = store
        self._config = config
        self._pending: dict[StepKey, tuple[int, StepProjection]] = {}

    async def load(self, keys: set[StepKey]) -> tuple[dict[StepKey, StepProjection], dict[StepKey, Exception]]:
        """(the projections of ``keys`` that exist, stored rows that could not be read)."""
        known: dict[StepKey, StepProjection] = {}
        missing = []
        for key in keys:
            hit = self._pending.get(key)
            proj = hit[1] if hit is not None else self.cache.get(key)
            if proj is None:
                missing.append(key)
            else:
                known[key] = proj
        unreadable: dict[StepKey, Exception] = {}
        known.update(await self._store.load_projections(missing, self._config, unreadable))
        return known, unreadable

    def stage(self, seq: int, projections: dict[StepKey, tuple[int, StepProjection]]) -> None:
        """Batch ``seq`` is prepared: later batches build on its projections."""
        for key, (_, proj) in projections.items():
            self._pending[key] = (seq, proj)

    def committed(self, seq: int, projections: dict[StepKey, tuple[int, StepProjection]]) -> None:
        """Batch ``seq`` committed: its projections are the committed ones now."""
        for key, (partition, proj) in projections.items():
            self.cache.put(key, partition, proj)
            hit = self._pending.get(key)
            if hit is not None and hit[0] == seq:
                del self._pending[key]

    def void(self, partitions: set[int]) -> None:
        """The writes in flight did not commit, or ``partitions`` are revoked: forget
        every batch not committed (of all partitions: writes are void together) and the
        cached steps of ``partitions``."""
        self._pending.clear()
        self.cache.drop_partitions(partitions)
