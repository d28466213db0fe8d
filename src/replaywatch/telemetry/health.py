"""Whether the service is ready, for ``/readyz``: its partitions are assigned, and it is
not stalled. Stalled: records wait on an owned partition (lag > 0) and nothing has
committed for ``stall_seconds`` (PostgreSQL, S3 or Kafka unreachable, say). A consumer
with nothing to do is not stalled: every empty poll with no write pending counts as
progress, so an idle partition whose last offsets are transaction markers stays ready."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Health:
    stall_seconds: float
    assigned: bool = False
    progress_at: float = field(default_factory=time.monotonic)

    def progressed(self) -> None:
        self.progress_at = time.monotonic()

    def readiness(self, lag: dict[int, int]) -> tuple[bool, str]:
        """(ready, why), from each owned partition's lag."""
        if not self.assigned:
            return False, "waiting for the group to assign partitions"
        behind = sum(n for n in lag.values() if n > 0)
        quiet = time.monotonic() - self.progress_at
        if behind and quiet > self.stall_seconds:
            return False, f"stalled: {behind} records behind and nothing committed for {quiet:.0f}s"
        return True, f"{len(lag)} partitions owned, {behind} records behind"
