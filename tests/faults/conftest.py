"""Fault tests restart services, so they need the devstack that runs them."""

from __future__ import annotations

import pytest

from replaywatch.devstack import Stack, default_dir
from tests.conftest import Endpoints


@pytest.fixture(scope="session")
def stack(endpoints: Endpoints) -> Stack:
    s = Stack(default_dir())
    if not all(s.running(n) for n in ("kafka", "postgres", "s3")) or s.env()["REPLAYWATCH_KAFKA_BOOTSTRAP"] != (
        endpoints.kafka_bootstrap
    ):
        pytest.fail(
            "the fault suite restarts Kafka, PostgreSQL and S3, so it needs the devstack that runs them "
            f"(state in {s.root}); run it with `make test` or `make test-faults`, not against other endpoints"
        )
    return s
