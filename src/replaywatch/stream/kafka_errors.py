"""aiokafka's errors, translated where they enter (one context manager).

aiokafka's own ``retriable`` flag is no guide (a request timeout and a rebalance in
progress are marked not retriable), so the split is by name:

- refusals that retrying cannot mend (authorization, an invalid topic, a broker too
  old) -> ``ServiceRefused``: the process stops;
- a producer fenced by the next owner -> ``Fenced``;
- everything else (connections, timeouts, leaders moving, coordinators) -> ``TransientError``.

Records too large for a topic are handled where they are sent (dead letters, the
publisher), never retried.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiokafka import errors

from replaywatch.exceptions import Fenced, ServiceRefused, TransientError

_REFUSED_NAMES = frozenset(
    {
        "TopicAuthorizationFailedError",
        "GroupAuthorizationFailedError",
        "ClusterAuthorizationFailedError",
        "TransactionalIdAuthorizationFailed",
        "SaslAuthenticationFailed",
        "AuthenticationFailedError",
        "InvalidTopicError",
        "UnsupportedVersionError",
        "UnsupportedSaslMechanismError",
        "InvalidReplicationFactorError",
        "InvalidTransactionTimeoutError",
    }
)
REFUSED: tuple[type[BaseException], ...] = tuple(
    getattr(errors, name) for name in sorted(_REFUSED_NAMES) if hasattr(errors, name)
)


def refusal_hint(exc: BaseException) -> str:
    """What to do about a refusal, for its one message."""
    name = type(exc).__name__
    if "Authorization" in name or "Authentication" in name or "Sasl" in name:
        return (
            "grant replaywatch's principal the ACLs it needs (topics, group, transactional ids) or fix its credentials"
        )
    return "check the Kafka settings and the topic names"


@contextlib.asynccontextmanager
async def translate_kafka_errors(what: str) -> AsyncIterator[None]:
    try:
        yield
    except errors.ProducerFenced as exc:
        raise Fenced(f"Kafka producer fenced during {what}: another instance took over") from exc
    except REFUSED as exc:
        raise ServiceRefused(f"Kafka refused {what}: {type(exc).__name__}: {exc}; {refusal_hint(exc)}") from exc
    except (errors.KafkaError, OSError, TimeoutError) as exc:
        raise TransientError(f"Kafka unavailable during {what}: {type(exc).__name__}: {exc}") from exc
