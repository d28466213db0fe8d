"""One retry policy for PostgreSQL, S3 and Kafka: transient errors are retried with
exponential backoff (0.1 s doubling to 5 s); anything else goes up at once. Once the
process is stopping, a call gives up ``grace`` seconds later (``GaveUp``), so that
SIGTERM is never stuck behind a dead service.

tenacity does the work: its wait, retry and stop conditions say exactly this.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from replaywatch import telemetry
from replaywatch.exceptions import GaveUp, TransientError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Backoff:
    def __init__(self, stop: asyncio.Event, *, first: float = 0.1, most: float = 5.0, grace: float = 5.0) -> None:
        self._stop = stop
        self._first = first
        self._most = most
        self._grace = grace

    async def call(self, fn: Callable[[], Awaitable[T]], what: str) -> T:
        """``await fn()`` until it does not raise TransientError."""
        stopping_since: list[float] = []

        def give_up(state: RetryCallState) -> bool:
            if not self._stop.is_set():
                return False
            if not stopping_since:
                stopping_since.append(time.monotonic())
            return time.monotonic() - stopping_since[0] >= self._grace

        def log(state: RetryCallState) -> None:
            wait = state.next_action.sleep if state.next_action else 0.0
            error = state.outcome.exception() if state.outcome else None
            telemetry.RETRIES.add(1, {"cause": cause_of(error)})
            logger.warning("%s: %s; retrying in %.1fs", what, error, wait)

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(TransientError),
                wait=wait_exponential(multiplier=self._first, max=self._most),
                stop=give_up,
                before_sleep=log,
                reraise=True,
            ):
                with attempt:
                    return await fn()
        except TransientError as exc:
            if self._stop.is_set():
                raise GaveUp(f"gave up {what} to stop: {exc}") from exc
            raise
        raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


def cause_of(error: BaseException | None) -> str:
    """What a retry is for, by kind (a metric attribute): the service's own error class
    under the translated one (ConnectionRefusedError, KafkaConnectionError, ...)."""
    if error is None:
        return "unknown"
    return type(error.__cause__ or error).__name__
