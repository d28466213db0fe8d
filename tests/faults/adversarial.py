"""Adversarial inputs that the contract accepts (they must be compared), and their
neighbours just over a limit (they must be dead-lettered with the reason)."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from replaywatch.compare.canonical import MAX_DEPTH, compact_bytes

NOW = 1_790_000_000_000
UTF8_OF_WIDTH = {1: "a", 2: "é", 3: "語", 4: "😀"}


@dataclass
class Adversarial:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(expected dead-letter reason, event)"""
    attestation_runs: list[str] = field(default_factory=list)


def _event(run: str, step: str, n: int, snapshot: Any, tools: Any = None, *, text: str | None = None) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "run_id": run, "step_id": step, "attempt": n, "status": "succeeded",
        "occurred_at": NOW + n,
        "output_snapshot": text if text is not None else compact_bytes(snapshot).decode(),
        "tool_events": None if tools is None else compact_bytes(tools).decode(),
    }  # fmt: skip


def nested(depth: int, leaf: Any) -> Any:
    """``depth`` levels in all, alternating objects and arrays, built without recursion."""
    value = leaf
    for level in range(depth - 1):
        value = {"k": value, "s": level} if level % 2 else ["x", value]
    return value


def build(seed: int, *, scale: int = 1, big_string_mb: int = 3) -> Adversarial:
    rng = random.Random(seed)
    out = Adversarial()
    tag = f"adv{seed}"

    def pair(run: str, step: str, first: Any, second: Any, *, tools: tuple[Any, Any] | None = None) -> None:
        out.accepted.append(_event(run, step, 1, first, tools[0] if tools else None))
        out.accepted.append(_event(run, step, 2, second, tools[1] if tools else None))

    for i in range(scale):
        # nesting at 1,000 levels: in the snapshot (drift) and in the tool events (divergence)
        pair(f"{tag}-deep-{i}", "snapshot", nested(1000, {"v": 1, "tokens": 5}), nested(1000, {"v": 2, "tokens": 5}))
        pair(f"{tag}-deep-{i}", "tools", {"ok": True}, {"ok": True},
             tools=(nested(1000, {"call": "search"}), nested(1000, {"call": "fetch"})))  # fmt: skip
        pair(f"{tag}-deep-{i}", "at-limit", nested(MAX_DEPTH, 1), nested(MAX_DEPTH, 2))
        # ids of 1,024 characters of 1, 2, 3 and 4 bytes in UTF-8 (up to 4 KB each)
        for width, char in UTF8_OF_WIDTH.items():
            pair(char * 1024, f"{char * 1020}{i:04d}", {"w": width, "tokens": 10}, {"w": width, "tokens": 12})
        # 100,000 attestation ids: half of them change, so the event is far over 1 MB
        run = f"{tag}-attest-{i}"
        ids = [f"att-{uuid.UUID(int=rng.getrandbits(128))}" for _ in range(100_000)]
        pair(run, "s", {"attestation_ids": ids}, {"attestation_ids": ids[:50_000] + [i + "-new" for i in ids[50_000:]]})
        out.attestation_runs.append(run)
        # multi-megabyte strings
        blob = "".join(rng.choice("abcdef") for _ in range(1024)) * (big_string_mb * 1024)
        pair(f"{tag}-big-{i}", "s", {"text": blob, "tokens": 1}, {"text": blob[:-1] + "!", "tokens": 1})
    # just over a limit: dead-lettered with the reason, never compared
    out.refused += [
        ("too_deep", _event(f"{tag}-too-deep", "s", 1, None, text="[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))),
        ("contract", _event("a" * 1025, "s", 1, {"v": 1})),
        ("too_large", _event(f"{tag}-huge", "s", 1, {"blob": "x" * (9 * 1024 * 1024)})),
        ("too_large", _event(f"{tag}-tools", "s", 1, {"v": 1}, [{"out": "y" * (5 * 1024 * 1024)}])),
    ]
    return out


def interleave(good: list[dict[str, Any]], adversarial: Adversarial, seed: int) -> list[dict[str, Any]]:
    """The adversarial events spread through normal traffic, each step's attempts in
    order, so that they share batches with ordinary records."""
    rng = random.Random(seed)
    mixed = list(good)
    extra = adversarial.accepted + [e for _, e in adversarial.refused]
    positions = sorted(rng.randrange(len(mixed) + 1) for _ in extra)
    for offset, (at, ev) in enumerate(zip(positions, extra, strict=True)):
        mixed.insert(at + offset, ev)
    return mixed


def size_of(event: dict[str, Any]) -> int:
    return len(orjson.dumps(event))
