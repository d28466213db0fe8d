"""A synthetic fleet of agent runs: attempt events with a chosen mix of drift and
divergence, duplicates and out-of-order arrivals. Pure and seeded: the same arguments
give the same events."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

_NS = uuid.UUID("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0")
BASE_TIME_MS = 1_790_000_000_000


@dataclass(frozen=True)
class FleetSpec:
    runs: int = 20
    steps: int = 4
    attempts: int = 3
    drift: float = 0.07
    tool_divergence: float = 0.02
    attestation_divergence: float = 0.01
    duplicates: float = 0.02
    out_of_order: float = 0.05
    no_snapshot: float = 0.0
    snapshot_bytes: int = 1000
    seed: int = 7
    run_every_ms: int = 10_000
    """Event time between two runs' starts (their steps a tenth of it apart)."""


def _snapshot(rng: random.Random, run: int, step: int, size: int) -> dict[str, Any]:
    words = ["alpha", "beta", "gamma", "delta", "summary", "revenue", "region", "policy", "result", "answer"]
    bullets = []
    text_len = 0
    while text_len < max(0, size - 420):
        b = " ".join(rng.choice(words) for _ in range(8))
        bullets.append(b)
        text_len += len(b) + 3
    return {
        "status": "ok",
        "message": f"run {run} step {step} finished",
        "answer": {
            "bullets": bullets,
            "confidence": 0.9,
            "citations": [{"doc": f"doc-{i}", "page": i} for i in range(3)],
        },
        "usage": {"prompt_tokens": 500 + step, "tokens": 600 + 10 * step, "cost_usd": 0.002 + step / 1000},
        "model": {"name": "agent-large", "version": "2026-10-01"},
        "attestation_ids": [f"att-{run}-{step}-a", f"att-{run}-{step}-b"],
    }


TOOLS = [
    {"kind": "tool.run", "name": "search", "payload": {"query": "quarterly revenue", "hits": 12}},
    {"kind": "tool.result", "name": "search", "payload": {"ok": True}},
]


def synthetic_fleet(spec: FleetSpec) -> list[dict[str, Any]]:
    """StepAttemptEvent records (as dicts for ``codec.encode_attempt``), in send order."""
    rng = random.Random(spec.seed)
    events: list[dict[str, Any]] = []
    for run in range(spec.runs):
        run_id = f"run-{spec.seed}-{run:06d}"
        per_run: list[list[dict[str, Any]]] = []
        for step in range(spec.steps):
            step_id = f"step-{step}"
            base = _snapshot(rng, run, step, spec.snapshot_bytes)
            attempts = []
            for n in range(1, spec.attempts + 1):
                snap = orjson.loads(orjson.dumps(base))
                tools: Any = orjson.loads(orjson.dumps(TOOLS))
                if n > 1:
                    roll = rng.random()
                    if roll < spec.attestation_divergence:
                        snap["attestation_ids"] = [f"att-{run}-{step}-x{n}"]
                    elif roll < spec.attestation_divergence + spec.tool_divergence:
                        tools[0]["payload"]["hits"] = 12 + n
                    elif roll < spec.attestation_divergence + spec.tool_divergence + spec.drift:
                        if rng.random() < 0.5:
                            snap["usage"]["tokens"] = int(snap["usage"]["tokens"] * 1.5)
                        else:
                            snap["message"] = f"run {run} step {step} answered differently"
                    else:
                        snap["usage"]["tokens"] = snap["usage"]["tokens"] + rng.choice([0, 1, 2])
                has_snapshot = rng.random() >= spec.no_snapshot
                attempts.append(
                    {
                        "event_id": str(uuid.uuid5(_NS, f"{run_id}/{step_id}/{n}")),
                        "run_id": run_id,
                        "step_id": step_id,
                        "attempt": n,
                        "status": "succeeded" if has_snapshot else "failed",
                        "occurred_at": BASE_TIME_MS + run * spec.run_every_ms + step * (spec.run_every_ms // 10) + n,
                        "output_snapshot": orjson.dumps(snap).decode() if has_snapshot else None,
                        "tool_events": orjson.dumps(tools).decode(),
                        "provider": "demo",
                    }
                )
            for i in range(len(attempts) - 1):
                if rng.random() < spec.out_of_order:
                    attempts[i], attempts[i + 1] = attempts[i + 1], attempts[i]
            per_run.append(attempts)
        # a run's steps interleave, each step's attempts stay in their (possibly swapped) order
        while any(per_run):
            lane = rng.choice([a for a in per_run if a])
            ev = lane.pop(0)
            events.append(ev)
            if rng.random() < spec.duplicates:
                events.append(dict(ev))
    return events


def replay(events: list[dict[str, Any]], config: Any) -> tuple[dict[tuple[str, str], Any], dict[str, str]]:
    """One clean pass over these events, sent in this order (one partition per run keeps
    each run's order, which is all that matters): (final projection per step,
    event_id -> verdict of every comparison made)."""
    from replaywatch.codec import decode_attempt, encode_attempt
    from replaywatch.core.projection import StepProjection, apply

    state: dict[tuple[str, str], StepProjection] = {}
    out: dict[str, str] = {}
    for ev in events:
        a = decode_attempt(encode_attempt(ev))
        key = (a.run_id, a.step_id)
        proj, comps = apply(state.get(key) or StepProjection.empty(*key), a, config)
        state[key] = proj
        for c in comps:
            out[c.event_id] = c.verdict.value
    return state, out


def expected_comparisons(events: list[dict[str, Any]], config: Any) -> dict[str, str]:
    """event_id -> verdict of the comparisons these events cause."""
    return replay(events, config)[1]
