"""[helm] Kafka over SASL (the devstack's SASL_PLAINTEXT listener, SCRAM and PLAIN users
created at start): wrong credentials stop ``run`` at once with one clear line, right ones
carry the reference scenarios end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from replaywatch.devstack import Stack, default_dir
from tests.conftest import Endpoints
from tests.integration.streaming import Lane
from tests.integration.streaming import attempt_event as attempt

pytestmark = pytest.mark.integration


KEYS = ("BOOTSTRAP", "USERNAME", "PASSWORD")


def sasl() -> dict[str, str]:
    """The devstack's SASL listener and user (from its env, or its state)."""
    env = dict(os.environ)
    if "REPLAYWATCH_DEVSTACK_KAFKA_SASL_BOOTSTRAP" not in env:
        env |= Stack(default_dir()).env()
    return {k: env[f"REPLAYWATCH_DEVSTACK_KAFKA_SASL_{k}"] for k in KEYS}


def sasl_lane(lane: Lane, mechanism: str, password: str | None = None) -> Lane:
    s = sasl()
    lane.extra = {
        "kafka_bootstrap": s["BOOTSTRAP"],
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": mechanism,
        "kafka_sasl_username": s["USERNAME"],
        "kafka_sasl_password": password or s["PASSWORD"],
        "tokens_tolerance": 0.01,
        "cost_tolerance": 0.01,
    }
    return lane


@pytest.fixture
def lane(endpoints: Endpoints, pg_schema: str, bucket: str) -> Lane:
    return Lane(endpoints, pg_schema, bucket)


def test_wrong_credentials_stop_run_at_once_with_one_line(lane: Lane) -> None:
    env = {**os.environ, **sasl_lane(lane, "SCRAM-SHA-256", password="not-the-password").env}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "replaywatch", "run"], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    took = time.monotonic() - started
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() and "Traceback" not in line]
    expected = "replaywatch: error: Kafka refused the SCRAM-SHA-256 login of user 'replaywatch'"
    assert len(errors) == 1 and errors[0].startswith(expected), proc.stderr
    assert "REPLAYWATCH_KAFKA_SASL_USERNAME" in errors[0] and "not-the-password" not in proc.stderr
    assert took < 30, f"no retry loop: it took {took:.0f}s"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
async def test_right_credentials_carry_the_reference_scenarios(lane: Lane, mechanism: str) -> None:
    sasl_lane(lane, mechanism)
    run = f"run-{lane.tag}"
    pairs = {
        "identical": ({"status": "ok", "tokens": 600}, {"status": "ok", "tokens": 600}, None, None),
        "within": ({"m": "x", "metrics": {"tokens": 100}}, {"m": "x", "metrics": {"tokens": 100.5}}, None, None),
        "attest": ({"attestation_ids": ["old"]}, {"attestation_ids": ["new"]}, None, None),
        "tools": ({}, {}, [{"tool": "a", "out": 1}], [{"tool": "a", "out": 2}]),
        "drift": ({"answer": 1}, {"answer": 2}, None, None),
    }
    events = [
        e
        for step, (a, b, ta, tb) in pairs.items()
        for e in (attempt(run, step, 1, a, ta), attempt(run, step, 2, b, tb))
    ]
    await lane.create_topics()  # through SASL too: the lane's settings name the listener
    await lane.send(events)
    async with lane.pipeline():
        out = await lane.outputs(want=5)
    assert {e["step_id"]: e["verdict"] for e in out} == {
        "identical": "within_tolerance", "within": "within_tolerance", "attest": "attestation_divergence",
        "tools": "tool_event_divergence", "drift": "drift",
    }  # fmt: skip
