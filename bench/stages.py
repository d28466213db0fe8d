"""Where a system's CPU goes, by stage: a py-spy profile (``--format raw``: one
collapsed stack and its sample count per line) sorted into the pipeline's stages.

py-spy samples each Python thread that is running (not waiting) ``rate`` times a
second, so a sample stands for 1/rate s of one core's CPU: a stage's µs per event is
its samples / rate / events. What the process spent outside sampled Python frames
(threads of native libraries, librdkafka's in the Quix peer) is the process's CPU
less the samples' total: "outside Python threads".

Each sample goes to the stage of its innermost frame that names one, so telemetry's
work inside the encode stage is telemetry's, and a parse inside the comparison is the
comparison's. The same stages name the Quix peer's work (it runs replaywatch's pure
engine with Quix's state store and Kafka client).

Usage: python bench/stages.py PROFILE EVENTS [RATE] [CPU_S]
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (stage, substrings of a frame "function (file)"); the innermost matching frame decides
    ("start-up", ("_find_and_load",)),
    ("telemetry", ("replaywatch/telemetry.py", "opentelemetry/")),
    ("decode", ("decode_records", "decode_attempt", "read_records", "read_attempt", "parse_records", "parse_attempt")),
    ("load", ("Projections.load", "load_projections")),
    ("compare", ("apply_records", "replaywatch/projection.py")),
    ("diff upload", ("store_diffs", "Artifacts.put", "aiobotocore/", "botocore/", "obstore", "put_diff")),
    ("encode", ("Preparer._encode", "outgoing", "comparison_record", "encode_comparison")),
    ("write", ("Writer._write", "Writer._commit", "commit_batch", "asyncpg/")),
    ("state store", ("quixstreams/state/", "rocksdict")),
    ("publish", ("OutboxPublisher", "stream/publisher.py")),
    ("consume", ("InputConsumer", "aiokafka/consumer/", "stream/consumer.py")),
    (
        "Kafka client",
        (
            "aiokafka/",
            "confluent_kafka",
            "quixstreams/kafka/",
            "quixstreams/rowproducer",
            "quixstreams/rowconsumer",
            "quixstreams/models/",
        ),
    ),
)
REST = "event loop and the rest"
OUTSIDE = "outside Python threads"
ORDER = [name for name, _ in STAGES] + [REST, OUTSIDE]
_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def _frames(stack: str) -> list[str]:
    out = []
    for frame in stack.split(";"):
        m = _FRAME.match(frame)
        out.append(f"{m.group(1)} ({m.group(2)})" if m else frame)
    return out


def stage_of(frames: list[str]) -> str:
    """The stage of one sample: of its innermost frame that names a stage."""
    for frame in reversed(frames):
        for name, marks in STAGES:
            if any(m in frame for m in marks):
                return name
    return REST


def samples(profile: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in profile.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[stage_of(_frames(stack))] += int(n)
    return counts


def breakdown(profile: Path, events: int, rate: float, cpu_s: float | None = None) -> dict[str, float]:
    """µs of CPU per event by stage; with the process's CPU seconds ``cpu_s``, also what
    the samples did not see (``OUTSIDE``, never below 0)."""
    counts = samples(profile)
    out = {name: counts[name] / rate / events * 1e6 for name in ORDER if name != OUTSIDE}
    if cpu_s is not None:
        out[OUTSIDE] = max(0.0, cpu_s / events * 1e6 - sum(out.values()))
    return out


def main() -> None:
    profile, events = Path(sys.argv[1]), int(sys.argv[2])
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 250.0
    cpu_s = float(sys.argv[4]) if len(sys.argv) > 4 else None
    got = breakdown(profile, events, rate, cpu_s)
    for name, us in got.items():
        print(f"{name:26s} {us:7.1f} µs/event")
    print(f"{'in all':26s} {sum(got.values()):7.1f} µs/event")


if __name__ == "__main__":
    main()
