"""The envelopes a batch starts from: those of batches prepared and not yet committed
(the overlay), else the committed ones, loaded a whole partition at a time.

Like the projections (``state.projections``): batch N+1 is judged on top of N's
envelopes, which stay in the overlay, tagged with N's sequence number, until N commits
(then they are the committed ones) or is thrown away (a fence or a rewind).
"""

from __future__ import annotations

from collections.abc import Iterable

from replaywatch.envelope.adaptive import Action, EnvelopeKey
from replaywatch.envelope.model import CohortEnvelope
from replaywatch.ports import EnvelopeStore


class Envelopes:
    def __init__(self, store: EnvelopeStore) -> None:
        self._store = store
        self._committed: dict[EnvelopeKey, CohortEnvelope] = {}
        self._loaded: set[int] = set()
        self._pending: dict[EnvelopeKey, tuple[int, CohortEnvelope]] = {}
        self.actions: list[Action] | None = None
        """The operators' actions on envelopes (read again after a void: a commit that
        failed as acted on)."""

    async def load(self, partitions: Iterable[int]) -> dict[EnvelopeKey, CohortEnvelope]:
        """Every envelope of ``partitions`` as the next batch starts from it (and the
        operators' actions, in ``actions``)."""
        if self.actions is None:
            self.actions = await self._store.load_actions()
        wanted = set(partitions)
        if missing := wanted - self._loaded:
            self._committed.update(await self._store.load_envelopes(sorted(missing)))
            self._loaded |= missing
        out = {k: e for k, e in self._committed.items() if k[0] in wanted}
        out.update((k, e) for k, (_, e) in self._pending.items() if k[0] in wanted)
        return out

    def stage(self, seq: int, envelopes: dict[EnvelopeKey, CohortEnvelope]) -> None:
        """Batch ``seq`` is prepared: later batches build on its envelopes."""
        for key, env in envelopes.items():
            self._pending[key] = (seq, env)

    def committed(self, seq: int, envelopes: dict[EnvelopeKey, CohortEnvelope]) -> None:
        """Batch ``seq`` committed: its envelopes are the committed ones now."""
        for key, env in envelopes.items():
            if key[0] in self._loaded:
                self._committed[key] = env
            hit = self._pending.get(key)
            if hit is not None and hit[0] == seq:
                del self._pending[key]

    def void(self, partitions: set[int]) -> None:
        """Forget every batch not committed, and the committed envelopes of
        ``partitions`` (read again when next needed: another owner may have moved them)."""
        self._pending.clear()
        self.actions = None
        self._loaded -= partitions
        self._committed = {k: e for k, e in self._committed.items() if k[0] not in partitions}
