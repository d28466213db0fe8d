"""``replaywatch serve`` is safe to deploy: no authentication only on loopback, a token
(Bearer or HTTP Basic) or an auth proxy's header otherwise, security headers on every
answer, the Host header checked, and every list paginated. Served for real on a
loopback port over a store of the same interface (no services needed)."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from replaywatch.exceptions import ConfigError
from replaywatch.views.web import PAGE, create_app, serving_web
from replaywatch.views.web_access import SECURITY_HEADERS, Access

TOKEN = "s3cret-token-0123456789"


def comparison(n: int) -> dict[str, Any]:
    return {"event_id": f"00000000-0000-4000-8000-{n:012d}", "run_id": "run-1", "step_id": f"s{n}",
            "baseline_attempt": 1, "current_attempt": 2, "verdict": "drift", "token_delta": 1.0, "cost_delta": None,
            "diff_sha256": None, "settings_fingerprint": None,
            "detected_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}  # fmt: skip


class Store:
    """The reads the web view makes, over 450 comparisons of one run."""

    def __init__(self) -> None:
        self.rows = [comparison(n) for n in range(450)]
        self.asked: list[tuple[int | None, int]] = []

    async def recent_comparisons(self, *, verdict: str | None = None, run_id: str | None = None, limit: int = 100,
                                 offset: int = 0) -> list[dict[str, Any]]:  # fmt: skip
        self.asked.append((limit, offset))
        return self.rows[offset : offset + limit]

    async def report(self, run_id: str, *, limit: int | None = None, offset: int = 0) -> tuple[list[Any], list[Any]]:
        self.asked.append((limit, offset))
        row = {"base_attempt": 1, "current_attempt": 2, "max_attempt": 2, "last_status": "succeeded",
               "last_verdict": "drift", "comparisons": 1}  # fmt: skip
        steps = [row | {"step_id": r["step_id"]} for r in self.rows]
        end = None if limit is None else offset + limit
        return steps[offset:end], self.rows[offset:end]

    async def comparison(self, event_id: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["event_id"] == event_id), None)

    async def verdict_counts(self, seconds: float) -> dict[str, int]:
        return {"drift": len(self.rows)}


async def served(access: Access | None, store: Store | None = None) -> AsyncIterator[str]:
    async with serving_web(create_app(store or Store(), None, access), "127.0.0.1", 0) as port:  # type: ignore[arg-type]
        yield f"http://127.0.0.1:{port}"


async def get(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.text()


def test_no_authentication_only_on_loopback() -> None:
    for bind in ("127.0.0.1", "::1", "localhost"):
        assert Access.of(bind=bind, mode="none", token=None, header="X", hosts=()).mode == "none"
    with pytest.raises(ConfigError, match="without authentication"):
        Access.of(bind="0.0.0.0", mode="none", token=None, header="X", hosts=())
    with pytest.raises(ConfigError, match="16 characters"):
        Access.of(bind="0.0.0.0", mode="token", token="short", header="X", hosts=())
    assert Access.of(bind="0.0.0.0", mode="proxy", token=None, header="X-Forwarded-User", hosts=()).hosts == ("*",)


async def test_a_token_is_required_and_checked() -> None:
    access = Access.of(bind="0.0.0.0", mode="token", token=TOKEN, header="X", hosts=())
    async for base in served(access):
        status, headers, _ = await get(f"{base}/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert (await get(f"{base}/", Authorization="Bearer wrong-token-0123456789"))[0] == 401
        assert (await get(f"{base}/", Authorization=f"Bearer {TOKEN}"))[0] == 200
        basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        assert (await get(f"{base}/runs/run-1", Authorization=f"Basic {basic}"))[0] == 200
        assert (await get(f"{base}/", Authorization="Basic !!notbase64"))[0] == 401
        assert (await get(f"{base}/healthz"))[0] == 200  # probes need no token


async def test_behind_a_proxy_its_user_header_is_required() -> None:
    access = Access.of(bind="0.0.0.0", mode="proxy", token=None, header="X-Forwarded-User", hosts=())
    async for base in served(access):
        assert (await get(f"{base}/stats"))[0] == 401
        assert (await get(f"{base}/stats", **{"X-Forwarded-User": "alice"}))[0] == 200


async def test_every_answer_carries_the_security_headers_and_the_host_is_checked() -> None:
    async for base in served(None):  # the default: open, on loopback
        for path in ("/", "/stats", "/healthz", "/comparisons/not-an-id"):
            status, headers, _ = await get(f"{base}{path}")
            assert status in (200, 404), path
            assert {k: headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS, path
        assert (await get(f"{base}/", Host="attacker.example"))[0] == 400  # DNS rebinding
        assert (await get(f"{base}/", Host="localhost:8081"))[0] == 200


async def test_every_list_is_paginated() -> None:
    store = Store()
    async for base in served(None, store):
        _, _, first = await get(f"{base}/?verdict=drift")
        assert first.count('class="detail"') == PAGE and 'rel="next" href="?verdict=drift&amp;run=&amp;page=1"' in first
        _, _, last = await get(f"{base}/?page=2")
        assert last.count('class="detail"') == 450 - 2 * PAGE and 'rel="next"' not in last and 'rel="prev"' in last
        _, _, run = await get(f"{base}/runs/run-1?page=1")
        assert run.count('class="detail"') == PAGE and 'rel="next"' in run
    assert all(limit == PAGE + 1 for limit, _ in store.asked)  # never an unbounded read
