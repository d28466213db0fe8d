"""`make demo`'s script, against the tests' stack, ends with a screen a person reads."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import Endpoints

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_demo_script_runs_end_to_end(endpoints: Endpoints) -> None:
    env = {
        **os.environ,
        "REPLAYWATCH_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "REPLAYWATCH_POSTGRES_DSN": endpoints.postgres_dsn,
        "REPLAYWATCH_S3_ENDPOINT": endpoints.s3_endpoint,
        "REPLAYWATCH_S3_ACCESS_KEY_ID": endpoints.s3_access_key_id,
        "REPLAYWATCH_S3_SECRET_ACCESS_KEY": endpoints.s3_secret_access_key,
        "REPLAYWATCH_S3_REGION": endpoints.s3_region,
        "REPLAYWATCH_POSTGRES_SCHEMA": f"demo_{uuid.uuid4().hex[:8]}",  # the demo's runs are the same every time
        "RW": str(Path(sys.executable).parent / "replaywatch"),
        "PYTHON": sys.executable,
        "DEMO_RUNS": "10",
        "COLUMNS": "80",  # a terminal of 80 columns
    }
    res = subprocess.run(["bash", str(ROOT / "scripts/demo.sh")], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = res.stdout.splitlines()
    # the last screen: the telemetry as a few named figures, then the summary on its own lines
    last = lines[next(i for i, line in enumerate(lines) if line.startswith("telemetry (")) :]
    assert all(len(line) <= 80 for line in last), [line for line in last if len(line) > 80]
    assert not any("otel_scope" in line for line in last), "raw Prometheus lines on the last screen"
    figures = {line.split(":")[0].strip() for line in last if line.startswith("  ") and ":" in line}
    assert {"ready", "records", "verdicts", "sent", "published", "consumer"} <= figures, last
    summary = last[last.index("demo summary") :]
    assert "expected comparisons, in" in next(line for line in summary if line.startswith("  published:"))
    # from an alert to the diff: the demo shows one (its fleet is seeded: it has diffs)
    shown = res.stdout.split("replaywatch diff ", 1)
    assert len(shown) == 2 and any(k in shown[1] for k in ("changed ·", "diverged ·")), res.stdout[-3000:]
