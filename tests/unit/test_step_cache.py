"""The step cache's memory bound holds: what it counts is what the projections take."""

from __future__ import annotations

import gc
import tracemalloc

from replaywatch import codec, demo
from replaywatch.compare import CompareConfig
from replaywatch.core.projection import StepProjection, apply
from replaywatch.state.cache import StepCache


def test_the_weight_of_cached_projections_is_their_memory() -> None:
    spec = demo.FleetSpec(runs=300, steps=4, attempts=3, drift=0.07, tool_divergence=0.02, snapshot_bytes=1000, seed=5)
    attempts = [codec.decode_attempt(codec.encode_attempt(e)) for e in demo.synthetic_fleet(spec)]
    config = CompareConfig.build(0.0, 0.0, (), "first")
    cache = StepCache(10**9, 10**12)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for a in attempts:
            key = (a.run_id, a.step_id)
            proj, _ = apply(cache.get(key) or StepProjection.empty(*key), a, config)
            cache.put(key, 0, proj)
        del a, proj
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(cache) == 1200
    assert 0.8 < cache.bytes / held < 1.25, (cache.bytes // len(cache), held // len(cache))


def test_a_projections_weight_counts_its_ids() -> None:
    from replaywatch.core.projection import StepProjection
    from replaywatch.state.cache import weight

    small, large = StepProjection.empty("r", "s"), StepProjection.empty("r" * 4096, "s" * 4096)
    assert weight(large) - weight(small) >= 2 * (4095 + 4095)
