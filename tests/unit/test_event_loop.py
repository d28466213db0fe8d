"""The event loop that run and the replays take (REPLAYWATCH_EVENT_LOOP)."""

from __future__ import annotations

import asyncio
import builtins
import inspect
from typing import Any

import pytest

from replaywatch.cli import process
from replaywatch.config import Settings
from replaywatch.exceptions import UsageError


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize(("choice", "module"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_the_loop_the_setting_names(choice: str, module: str) -> None:
    assert process.run(Settings(event_loop=choice), loop_module()).split(".")[0] == module


def test_asyncios_own_loop_is_the_default() -> None:
    assert Settings().event_loop == "asyncio"
    assert process.run(Settings(), loop_module()) == "asyncio.unix_events"


def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.__import__

    def refuse(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)


def test_auto_falls_back_to_asyncio_where_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    without_uvloop(monkeypatch)
    assert process.run(Settings(event_loop="auto"), loop_module()) == "asyncio.unix_events"


def test_uvloop_asked_for_and_missing_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    without_uvloop(monkeypatch)
    main = loop_module()
    with pytest.raises(UsageError, match="uvloop is not installed: pip install uvloop, or set REPLAYWATCH_EVENT_LOOP"):
        process.run(Settings(event_loop="uvloop"), main)
    assert inspect.getcoroutinestate(main) == inspect.CORO_CLOSED  # never left unawaited
