"""aiokafka's errors, translated where they enter (one context manager)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiokafka.errors import KafkaError, ProducerFenced

from replaywatch.exceptions import Fenced, TransientError


@contextlib.asynccontextmanager
async def translate_errors(what: str) -> AsyncIterator[None]:
    try:
        yield
    except ProducerFenced as exc:
        raise Fenced(f"Kafka producer fenced during {what}: another instance took over") from exc
    except (KafkaError, OSError, TimeoutError) as exc:
        raise TransientError(f"Kafka unavailable during {what}: {type(exc).__name__}: {exc}") from exc
