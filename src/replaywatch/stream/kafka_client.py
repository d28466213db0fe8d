"""The connection options every Kafka client of replaywatch shares (consumer, outbox
publisher, dead letters, admin, replays' readers, tail, the demo's producer): the
bootstrap servers, the security protocol, SASL (PLAIN, SCRAM-SHA-256/512) and TLS (a CA
file, a client certificate, hostname checking). One place, so that no client is left
speaking plaintext when the others do not."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import errors
from aiokafka.conn import create_conn
from aiokafka.helpers import create_ssl_context

from replaywatch.config import Settings
from replaywatch.exceptions import ConfigError, ServiceRefused, TransientError


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer, AIOKafkaProducer and AIOKafkaAdminClient."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap, "security_protocol": protocol}
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": password.get_secret_value() if password else None,
        }
    if protocol.endswith("SSL"):
        key_password = settings.kafka_ssl_key_password
        try:
            context = create_ssl_context(
                cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
                certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
                keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
                password=key_password.get_secret_value() if key_password else None,
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the Kafka TLS files (REPLAYWATCH_KAFKA_SSL_*): {exc}") from None
        context.check_hostname = settings.kafka_ssl_check_hostname
        options["ssl_context"] = context
    return options


def fetch_options(settings: Settings) -> dict[str, Any]:
    """How much a consumer fetches at once. What a fetch brings stays in memory until
    it is prepared, so these bound the consumer's memory as well as its round trips;
    the broker still sends a record larger than either limit, alone."""
    return {
        "fetch_max_bytes": settings.fetch_max_bytes,
        "max_partition_fetch_bytes": min(settings.fetch_partition_bytes, settings.fetch_max_bytes),
        "fetch_min_bytes": settings.fetch_min_bytes,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
    }


async def check_credentials(settings: Settings, timeout: float = 10.0) -> None:
    """With SASL, authenticate once against the first bootstrap server before any client
    starts: aiokafka's clients log a refused login and then report only that they could
    not bootstrap, which would be retried forever. A refusal is ServiceRefused (one
    message, the process stops); a server that cannot be reached is TransientError."""
    if not settings.kafka_security_protocol.startswith("SASL_"):
        return
    options = client_options(settings)
    host, _, port = settings.kafka_bootstrap.split(",")[0].strip().rpartition(":")
    try:
        conn = await asyncio.wait_for(
            create_conn(
                host or "localhost",
                int(port),
                request_timeout_ms=int(timeout * 1000),
                **{k: v for k, v in options.items() if k != "bootstrap_servers"},
            ),
            timeout,
        )
    except (errors.SaslAuthenticationFailed, errors.UnsupportedSaslMechanismError, errors.IllegalSaslStateError) as exc:
        raise ServiceRefused(
            f"Kafka refused the {settings.kafka_sasl_mechanism} login of user {settings.kafka_sasl_username!r} at "
            f"{host}:{port}: {exc}; check REPLAYWATCH_KAFKA_SASL_USERNAME, _PASSWORD and _MECHANISM"
        ) from None
    except (errors.KafkaError, OSError, TimeoutError) as exc:
        raise TransientError(f"Kafka unreachable at {host}:{port}: {type(exc).__name__}: {exc}") from exc
    conn.close()
