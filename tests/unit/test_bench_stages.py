"""bench/stages.py: a py-spy sample is the stage of its innermost frame that names one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import stages

LOOP = "run_forever (asyncio/base_events.py:608);_run_once (asyncio/base_events.py:1922)"


def test_the_innermost_frame_that_names_a_stage_decides() -> None:
    encode_with_telemetry = ["Preparer._encode (replaywatch/prepare.py:140)",
                             "comparison_trace (replaywatch/telemetry.py:230)"]  # fmt: skip
    assert stages.stage_of(encode_with_telemetry) == "telemetry"
    upload_inside_compare = ["Preparer._compare (replaywatch/prepare.py:120)",
                             "apply_records (replaywatch/batch.py:80)",
                             "ObstoreArtifacts.put (replaywatch/store/obstore_artifacts.py:115)"]  # fmt: skip
    assert stages.stage_of(upload_inside_compare) == "diff upload"
    assert stages.stage_of(["process (bench/peers/quix_job.py:61)", "apply (replaywatch/projection.py:90)",
                            "parse_json (replaywatch/compare/canonical.py:36)"]) == "compare"  # fmt: skip
    assert stages.stage_of(["_run_once (asyncio/base_events.py:1922)", "select (selectors.py:468)"]) == stages.REST


def test_breakdown_is_samples_over_rate_per_event_and_the_rest_is_outside(tmp_path: Path) -> None:
    profile = tmp_path / "p.txt"
    profile.write_text(
        f"{LOOP};decode_records (replaywatch/batch.py:40);decode_attempt (replaywatch/codec.py:150) 50\n"
        f"{LOOP};Writer._write (replaywatch/commit/writer.py:200) 30\n"
        f"{LOOP} 20\n"
        "<module> (replaywatch/__main__.py:1);_find_and_load (<frozen importlib._bootstrap>:1176) 100\n"
    )
    # 100 events sampled at 100 Hz: a sample is 10 ms of CPU, so 100 µs per event
    got = stages.breakdown(profile, events=100, rate=100, cpu_s=0.25)
    assert got["decode"] == pytest.approx(5000.0)
    assert got["write"] == pytest.approx(3000.0)
    assert got[stages.REST] == pytest.approx(2000.0)
    assert got["start-up"] == pytest.approx(10000.0)
    assert got[stages.OUTSIDE] == 0.0  # the samples account for more than the CPU given: never below 0
    got = stages.breakdown(profile, events=100, rate=100, cpu_s=3.0)
    assert got[stages.OUTSIDE] == pytest.approx(30000.0 - 20000.0)
