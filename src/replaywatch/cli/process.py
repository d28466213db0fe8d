"""A long-running command's process: the garbage collector kept off the hot path, and
the work stopped within its grace period on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from replaywatch import native
from replaywatch.cli.logs import quiet_client_futures
from replaywatch.config import Settings
from replaywatch.exceptions import GaveUp, UsageError

T = TypeVar("T")


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path.

    Each decoded record allocates hundreds of containers (its parsed snapshot); with
    CPython's default thresholds every few hundred records start a collection. The
    step cache keeps its snapshots as bytes (``PreparedAttempt``), so what is parsed
    dies young, freed by reference counting. Freezing what exists after start-up and
    collecting the young generation less often leaves the collector for what actually
    makes cycles (asyncio and client objects): measured, one young collection in 25 s
    at 1,000 events/s.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``REPLAYWATCH_EVENT_LOOP`` names: asyncio's own (the default), uvloop
    (libuv, in C), or uvloop where it is installed (``auto``). None is asyncio's loop.

    asyncio's loop is the default because it measured faster here: on the end-to-end
    bench, mirrored runs, uvloop cost the consumer 25% more CPU per event (and Kafka
    and PostgreSQL more too), in both runs of each (``bench/HISTORY.md``)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise UsageError(
                "REPLAYWATCH_EVENT_LOOP=uvloop, but uvloop is not installed: pip install uvloop, "
                "or set REPLAYWATCH_EVENT_LOOP=auto"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(settings: Settings, main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the event loop the settings name."""
    try:
        factory = loop_factory(settings.event_loop)
        fast = native.use(settings.native)
    except UsageError:
        main.close()  # never started: no "was never awaited" warning
        raise
    log = logging.getLogger("replaywatch.cli")
    log.info("event loop: %s; per-record path: %s", "uvloop" if factory else "asyncio", "native" if fast else "Python")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


async def until_signalled(settings: Settings, work: Callable[[asyncio.Event], Awaitable[T]]) -> T | None:
    """Run the pipeline (``work``) until it ends, or until SIGTERM or SIGINT, then stop
    within the grace period (None when it had to be cancelled).

    The pipeline first stops gracefully: it finishes the write in flight and publishes
    what is committed. After ``REPLAYWATCH_SHUTDOWN_SECONDS`` it is cancelled, and if
    even that does not end it (a client stuck on a dead service), the process exits
    1.5 s later. Either way the exit status is 0: PostgreSQL holds what was committed,
    and the next owner of the partitions resumes from there.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    log = logging.getLogger("replaywatch.cli")

    def hard_exit() -> None:
        log.warning("stopped: clients did not close in time; PostgreSQL holds what was committed")
        logging.shutdown()
        os._exit(0)

    def on_signal() -> None:
        if stop.is_set():
            return
        stop.set()
        loop.call_later(settings.shutdown_seconds, main.cancel)
        watchdog = threading.Timer(settings.shutdown_seconds + 1.5, hard_exit)
        watchdog.daemon = True
        watchdog.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    loop.set_exception_handler(quiet_client_futures)
    try:
        return await work(stop)
    except asyncio.CancelledError:
        if not stop.is_set():
            raise
        log.warning(
            "stopped after %.0fs without finishing the work in flight; PostgreSQL holds what was committed",
            settings.shutdown_seconds,
        )
        return None
    except GaveUp as exc:  # a service was still down when the signal came (at start, say)
        if not stop.is_set():
            raise
        log.warning("stopped while waiting for a service (%s); PostgreSQL holds what was committed", exc)
        return None
