"""How the commands log: text or JSON lines on stderr, a client library's routine
noise demoted, and a message repeated many times a second let through once."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any


class OncePer:
    """A log filter that lets the same message through once per ``seconds``: a broker
    outage makes aiokafka log the same connection error many times a second.

    "The same" is the formatted text, not the template: two rebalances a second apart
    log different partitions with one template, and both must be seen."""

    def __init__(self, seconds: float, remembered: int = 10_000) -> None:
        self.seconds = seconds
        self.remembered = remembered
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.getMessage()[:500])
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.seconds:
            return False
        if len(self._last) >= self.remembered:
            self._last.clear()
        self._last[key] = now
        return True


class DemoteLibraryNoise:
    """aiokafka logs some events of normal operation at ERROR: a coordinator looked up
    again while the group forms or as the consumer leaves at shutdown. Those records
    become DEBUG (shown only with REPLAYWATCH_LOG_LEVEL=DEBUG); every other record of
    the library is left as it is."""

    NOISE = ("GroupCoordinatorNotAvailableError", "NotCoordinatorForGroupError", "CoordinatorNotAvailable",
             "Coordinator load in progress")  # fmt: skip

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("aiokafka") and record.levelno >= logging.WARNING:
            text = record.getMessage()
            if any(n in text for n in self.NOISE):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def configure_logging(level: str, fmt: str = "text") -> None:
    """Text lines, or one JSON object per line (python-json-logger: the standard logging
    module's records, with the ``extra`` fields a call gives: partition, offset, ...)."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)
    for name in ("aiokafka", "asyncpg"):
        logging.getLogger(name).setLevel(logging.WARNING if level != "DEBUG" else logging.DEBUG)
    for handler in logging.getLogger().handlers:
        handler.addFilter(DemoteLibraryNoise())
        handler.addFilter(OncePer(10.0))


def quiet_client_futures(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """aiokafka leaves some internal futures' errors unretrieved (a failed transaction's
    offsets, say); the error has been raised to replaywatch already and handled there,
    so asyncio's report with a traceback is noise: one DEBUG line instead."""
    from aiokafka.errors import KafkaError

    if isinstance(context.get("exception"), KafkaError) and "never retrieved" in context.get("message", ""):
        logging.getLogger("replaywatch.cli").debug("unretrieved Kafka client error: %r", context["exception"])
        return
    loop.default_exception_handler(context)
