"""Where the consumer's CPU goes, by stage: a py-spy profile (``--format raw``: one
collapsed stack and its sample count per line) sorted into the pipeline's stages.

Each sample goes to the stage of the innermost frame that names one, so work done for
telemetry inside the encode stage is telemetry's, and an S3 upload started by the
compare stage is the upload's. Samples taken before the event loop ran (imports,
start-up) are left out. Usage: python bench/stages.py PROFILE [CPU_S_PER_EVENT]
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (stage, substrings of a frame "function (file)"), most specific first within a stack
    ("telemetry", ("replaywatch/telemetry.py", "opentelemetry/")),
    ("decode", ("decode_records", "decode_attempt")),
    ("load", ("Projections.load", "load_projections")),
    ("compare", ("apply_records",)),
    ("diff upload", ("store_diffs", "Artifacts.put", "aiobotocore/", "botocore/", "obstore")),
    ("encode", ("Preparer._encode", "outgoing")),
    ("write", ("Writer._write", "Writer._commit", "commit_batch", "asyncpg/")),
    ("publish", ("OutboxPublisher", "stream/publisher.py")),
    ("consume", ("InputConsumer", "aiokafka/consumer/", "stream/consumer.py")),
    ("kafka client I/O", ("aiokafka/",)),
)
ORDER = [name for name, _ in STAGES] + ["event loop and the rest"]
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
    return "event loop and the rest"


def shares(profile: Path) -> dict[str, float]:
    """Each stage's share of the samples taken while the event loop ran."""
    counts: Counter[str] = Counter()
    for line in profile.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = _frames(stack)
        if not any("_run_once" in f for f in frames):
            continue  # start-up: imports, configuration
        counts[stage_of(frames)] += int(n)
    total = sum(counts.values()) or 1
    return {name: counts[name] / total for name in ORDER}


def main() -> None:
    got = shares(Path(sys.argv[1]))
    per_event = float(sys.argv[2]) * 1e6 if len(sys.argv) > 2 else None
    for name, share in got.items():
        extra = f"  {share * per_event:7.1f} µs/event" if per_event else ""
        print(f"{name:28s} {share:6.1%}{extra}")


if __name__ == "__main__":
    main()
