"""The envelopes batches are judged against: loaded a whole partition at a time, then
changed in place by each batch prepared, in input order.

Batch N+1 is prepared on top of batch N's envelopes before N commits; each batch takes
its changed envelopes along as JSON as it ends (``Preparer``), so a commit writes
exactly the state its offsets reached. A write that does not commit voids every batch
not committed (``void``): the envelopes of the partitions it touched are read again
from PostgreSQL, which holds the state of the last commit.
"""

from __future__ import annotations

from collections.abc import Iterable

from replaywatch.envelope.adaptive import Action, EnvelopeKey
from replaywatch.envelope.model import CohortEnvelope
from replaywatch.ports import EnvelopeStore


class Envelopes:
    def __init__(self, store: EnvelopeStore) -> None:
        self._store = store
        self._live: dict[EnvelopeKey, CohortEnvelope] = {}
        self._loaded: set[int] = set()
        self.actions: list[Action] | None = None
        """The operators' actions on envelopes (read again after a void: a commit that
        failed as acted on)."""

    async def load(self, partitions: Iterable[int]) -> dict[EnvelopeKey, CohortEnvelope]:
        """The envelopes, with every one of ``partitions`` loaded (and the operators'
        actions, in ``actions``): the mapping a batch changes in place."""
        if self.actions is None:
            self.actions = await self._store.load_actions()
        if missing := set(partitions) - self._loaded:
            self._live.update(await self._store.load_envelopes(sorted(missing)))
            self._loaded |= missing
        return self._live

    def void(self, partitions: set[int]) -> None:
        """The batches not committed are thrown away (or ``partitions`` are revoked, with
        nothing in flight): the envelopes of ``partitions`` are read again when next
        needed, and so are the actions."""
        self.actions = None
        self._loaded -= partitions
        self._live = {k: e for k, e in self._live.items() if k[0] not in partitions}
