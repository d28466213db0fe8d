"""[ux] ``replaywatch serve`` on the real stack after a demo fleet, driven by headless
Chromium (Debian's chromium and chromedriver, through Selenium): open a run, follow a
drift to its diff, see the patch. Screenshots are kept in ``build/test-artifacts/``
(``REPLAYWATCH_SCREENSHOTS_DIR`` writes the README's as well)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from replaywatch import demo
from replaywatch.store.artifacts import S3Artifacts, S3Target
from replaywatch.store.postgres import PostgresStore
from replaywatch.views.web import create_app, serving_web
from tests.conftest import Endpoints
from tests.integration.streaming import Lane

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
NOW = 1_790_000_000_000
PUBLIC = "https://replaywatch.example.test"


def attempt(run: str, step: str, n: int, snapshot: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "run_id": run, "step_id": step, "attempt": n, "status": "succeeded",
            "occurred_at": NOW + n, "output_snapshot": orjson.dumps(snapshot).decode()}  # fmt: skip


def browser() -> webdriver.Chrome:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver are needed (make deps installs them)"
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def shoot(b: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    b.save_screenshot(str(path))
    if extra := os.environ.get("REPLAYWATCH_SCREENSHOTS_DIR"):
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


def browse(base: str, run: str) -> dict[str, Any]:
    """What a person does: the run, then its drift, then the diff. Blocking (Selenium)."""
    b = browser()
    seen: dict[str, Any] = {}
    try:
        b.get(f"{base}/")
        seen["index_rows"] = len(b.find_elements(By.CSS_SELECTOR, "a.detail"))
        shoot(b, "comparisons")
        b.get(f"{base}/runs/{run}")
        seen["run_title"] = b.find_element(By.TAG_NAME, "h2").text
        seen["steps"] = [r.text for r in b.find_elements(By.CSS_SELECTOR, "#steps tr")][1:]
        shoot(b, "run")
        drift_row = next(r for r in b.find_elements(By.CSS_SELECTOR, "table:not(#steps) tr")
                         if "answer" in r.text and "drift" in r.text)  # fmt: skip
        drift_row.find_element(By.CSS_SELECTOR, "a.detail").click()
        seen["diff_title"] = b.find_element(By.ID, "diff-title").text
        seen["patch"] = [r.text for r in b.find_elements(By.CSS_SELECTOR, "#diff tr")][1:]
        seen["url"] = b.current_url
        seen["screenshot"] = shoot(b, "comparison")
        b.get(f"{base}/stats")
        seen["stats"] = b.find_element(By.ID, "counts").text
        shoot(b, "stats")
    finally:
        b.quit()
    return seen


@pytest.fixture
def lane(endpoints: Endpoints, pg_schema: str, bucket: str) -> Lane:
    return Lane(endpoints, pg_schema, bucket, extra={"public_url": PUBLIC, "tokens_tolerance": 0.01})


async def test_follow_a_drift_from_its_run_to_its_diff(lane: Lane) -> None:
    fleet = demo.synthetic_fleet(demo.FleetSpec(runs=5, steps=3, attempts=3, drift=0.3, seed=3))
    run = f"run-web-{lane.tag}"
    events = [*fleet, attempt(run, "answer", 1, {"answer": {"city": "Paris"}, "tokens": 10}),
              attempt(run, "answer", 2, {"answer": {"city": "Lyon"}, "tokens": 10}),
              attempt(run, "plan", 1, {"plan": ["a"]}), attempt(run, "plan", 2, {"plan": ["a"]})]  # fmt: skip
    expected = demo.expected_comparisons(events, lane.settings().compare_config())
    await lane.create_topics()
    await lane.send(events)
    async with lane.pipeline():
        out = await lane.outputs(want=len(expected))
    drift = next(e for e in out if e["run_id"] == run and e["step_id"] == "answer")
    assert drift["detail_url"] == f"{PUBLIC}/comparisons/{drift['event_id']}"  # what an alert links to

    s, e = lane.settings(), lane.endpoints
    store = await PostgresStore.connect(e.postgres_dsn, schema=lane.schema, group_id=s.group_id, topic=s.input_topic,
                                        read_only=True)  # fmt: skip
    try:
        target = S3Target(
            bucket=lane.bucket,
            endpoint=e.s3_endpoint,
            region=e.s3_region,
            access_key_id=e.s3_access_key_id,
            secret_access_key=e.s3_secret_access_key,
        )
        async with S3Artifacts.open(target, create_bucket=False) as artifacts, \
                serving_web(create_app(store.history, artifacts), "127.0.0.1", 0) as port:  # fmt: skip
            seen = await asyncio.to_thread(browse, f"http://127.0.0.1:{port}", run)
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):  # the view cannot write
            await store.pool.execute(f'DELETE FROM "{lane.schema}".comparison')
    finally:
        await store.close()

    assert seen["index_rows"] == len(expected)
    assert seen["run_title"] == f"run {run}"
    assert seen["steps"] == ["answer 1→2 2 succeeded drift 1", "plan 1→2 2 succeeded within_tolerance 1"]
    assert seen["url"].endswith(f"/comparisons/{drift['event_id']}")
    assert seen["diff_title"] == "structure changed"
    assert seen["patch"] == ['replace /answer/city "Paris" "Lyon"']
    assert seen["screenshot"].stat().st_size > 10_000
    assert "drift" in seen["stats"] and f"all {len(expected)}" in seen["stats"]
