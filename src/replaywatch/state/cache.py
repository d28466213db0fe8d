"""The step cache: committed projections of the partitions this consumer owns, an LRU
bounded by count and by bytes."""

from __future__ import annotations

from collections import OrderedDict

from replaywatch.core.projection import StepProjection
from replaywatch.core.types import StepKey


def weight(proj: StepProjection) -> int:
    """Roughly the bytes of memory a projection holds: its ids (a key and the
    projection's own fields: up to 4 KB each), the JSON bytes of its two attempts, and
    a few hundred bytes of tuples and small values."""
    n = 300 + 2 * (len(proj.run_id) + len(proj.step_id)) + 2 * 49
    for p in (proj.baseline, proj.current):
        if p is not None:
            n += 400 + len(p.snapshot_json) + len(p.structure_fp)
            if p.tool_fp is not None:
                n += len(p.tool_fp) + (0 if p.tools_json is p.tool_fp else len(p.tools_json or b""))
    return n


class StepCache:
    """Committed step projections of the partitions this consumer owns: an LRU bounded
    by count and by bytes, so a few huge snapshots cannot grow memory without bound."""

    def __init__(self, capacity: int, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[StepKey, tuple[int, StepProjection, int]] = OrderedDict()

    def get(self, key: StepKey) -> StepProjection | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        self._items.move_to_end(key)
        return hit[1]

    def put(self, key: StepKey, partition: int, proj: StepProjection) -> None:
        if self.capacity <= 0:
            return
        self._remove(key)
        size = weight(proj)
        self._items[key] = (partition, proj, size)
        self.bytes += size
        while self._items and (len(self._items) > self.capacity or self.bytes > self.max_bytes):
            _, (_, _, w) = self._items.popitem(last=False)
            self.bytes -= w

    def _remove(self, key: StepKey) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[2]

    def drop_partitions(self, partitions: set[int]) -> None:
        for key in [k for k, (p, _, _) in self._items.items() if p in partitions]:
            self._remove(key)

    def __len__(self) -> int:
        return len(self._items)
