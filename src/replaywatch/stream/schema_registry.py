"""A Confluent-compatible schema registry: writer schemas by id, and the output schema.

The client is confluent-kafka's ``AsyncSchemaRegistryClient`` (on httpx2, or httpx before
confluent-kafka 2.13; basic auth and a TLS CA from the settings). What this adapter adds:

- **Writer schemas by id**, for the records of a batch: each id is fetched once and
  kept (the last ``MAX_SCHEMAS``), parsed for fastavro (``writers``), however many
  records carry it. An id the registry does not know (404, or another 4xx about the
  id) is remembered for a minute, as an ``UnknownSchemaId``; a schema that is not
  Avro, does not parse, or has arrays of zero-byte items, as an ``IncompatibleSchema``:
  the records that carry them are dead-lettered with those reasons.
- **Outages are transient**: unreachable, a timeout, 408/429/5xx (after the client's
  own retries) raise ``TransientError``, so the batch waits and is prepared again;
  nothing is dead-lettered for it. A 401/403 is ``ServiceRefused``: credentials to fix.
- **A 404 with no registry error in it** (no Confluent ``error_code``: an HTML page, a
  proxy's answer) did not come from the registry's API: the request was not routed to
  it. A fetch takes it as transient (the records wait, none is dead-lettered for it);
  a registration asks again a few times, then stops with a ``ConfigError`` that says
  the URL may not name a Confluent-compatible API.
- **The output schema** is registered under ``<topic>-value`` (TopicNameStrategy) at
  start; its id frames every event published (``codec.encode_comparison``).
"""

from __future__ import annotations

import json
import logging
import struct
import time
import urllib.parse
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Final

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

try:  # the HTTP client confluent-kafka's registry client uses: httpx2 from 2.13, httpx before
    import httpx2 as http_client
except ImportError:  # pragma: no cover - confluent-kafka < 2.13 (quixstreams, a bench peer, pins it)
    import httpx as http_client  # type: ignore[no-redef, import-not-found, unused-ignore]

# authlib, which the client imports, warns of its own httpx module with a filter of its
# own ("always"): recorded here, so that it is not printed by every command
with warnings.catch_warnings(record=True):
    from confluent_kafka.schema_registry import AsyncSchemaRegistryClient, Schema  # type: ignore[import-untyped, unused-ignore]
    from confluent_kafka.schema_registry.error import SchemaRegistryError  # type: ignore[import-untyped, unused-ignore]

from replaywatch import codec
from replaywatch.exceptions import (
    BadRecordError,
    ConfigError,
    IncompatibleSchema,
    ServiceRefused,
    TransientError,
    UnknownSchemaId,
)

logger = logging.getLogger(__name__)

MAX_SCHEMAS: Final = 4096
"""Writer schemas, and ids the registry did not know, kept at most (the oldest go)."""
UNKNOWN_FOR: Final = 60.0
"""Seconds an id the registry did not know is taken as unknown before it is asked again."""
UNROUTED_TRIES: Final = 5
"""Registrations answered by a 404 that no registry wrote, before the URL is taken as wrong."""
_HEADER = struct.Struct(">bI")

Writers = Mapping[int, Any]
"""Schema id -> a fastavro writer schema, or the ``BadRecordError`` its records get."""


def redact_url(url: str) -> str:
    """``url`` without the ``user:password@`` it may carry: what logs and headers show."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(a URL that does not parse)"
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def framed_ids(values: Iterable[bytes | None]) -> set[int]:
    """The schema ids of the values in the Confluent wire format (magic byte 0)."""
    return {_HEADER.unpack_from(v)[1] for v in values if v and v[0] == 0 and len(v) >= 5}


class SchemaRegistry:
    def __init__(self, client: AsyncSchemaRegistryClient, url: str) -> None:
        self._client = client
        self.url = redact_url(url)
        """The registry's URL as messages name it: any user and password left out."""
        self._writers: dict[int, Any] = {}
        self._unknown: dict[int, float] = {}
        self.fetches = 0
        """Requests made for writer schemas (one per id, unknown ids once a minute)."""
        self.unrouted_wait = 0.25
        """Seconds before a registration answered by an unrouted 404 is tried again (doubling)."""

    @classmethod
    def open(cls, url: str, *, user_info: str | None = None, ca_location: str | None = None,
             timeout: float = 10.0) -> SchemaRegistry:  # fmt: skip
        conf: dict[str, Any] = {"url": url, "timeout": timeout, "max.retries": 2, "retries.wait.ms": 200}
        if user_info:
            conf["basic.auth.user.info"] = user_info
        if ca_location:
            conf["ssl.ca.location"] = ca_location
        return cls(AsyncSchemaRegistryClient(conf), url)

    async def close(self) -> None:
        await self._client.__aexit__()  # type: ignore[no-untyped-call, unused-ignore]

    async def writers(self, values: Iterable[bytes | None]) -> Writers:
        """The writer schema of every framed value, fetched when not yet known."""
        out: dict[int, Any] = {}
        now = time.monotonic()
        for schema_id in framed_ids(values):
            if schema_id in self._writers:
                out[schema_id] = self._writers[schema_id]
            elif self._unknown.get(schema_id, 0.0) > now:
                out[schema_id] = UnknownSchemaId(f"schema id {schema_id} is unknown to the registry at {self.url}")
            else:
                out[schema_id] = await self._fetch(schema_id)
        return out

    async def _fetch(self, schema_id: int) -> Any:
        self.fetches += 1
        try:
            schema = await self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            status = exc.http_status_code
            if unrouted(exc):
                raise TransientError(
                    f"the schema registry at {self.url} answered 404 with no registry error to a fetch of "
                    f"schema id {schema_id}: the request did not reach its API; the records wait"
                ) from None
            if status == 404 or (400 <= status < 500 and status not in (401, 403, 408, 429)):
                # about this id, not about us: its records are dead-lettered, the others go on
                self._remember_unknown(schema_id)
                if status == 404:
                    return UnknownSchemaId(f"schema id {schema_id} is unknown to the registry at {self.url}")
                return UnknownSchemaId(
                    f"the registry at {self.url} answered {status} for schema id {schema_id}: {exc.error_message}"
                )
            raise _error(exc, f"fetch schema id {schema_id}") from None
        except (http_client.TransportError, OSError) as exc:
            raise self._unreachable(exc) from exc
        writer: Any = _writer_schema(schema_id, schema)
        if len(self._writers) >= MAX_SCHEMAS:
            del self._writers[next(iter(self._writers))]  # the oldest: fetched again if it comes back
        self._writers[schema_id] = writer
        logger.info("schema id %d: %s", schema_id, "a writer schema" if not isinstance(writer, BadRecordError)
                    else writer)  # fmt: skip
        return writer

    def _remember_unknown(self, schema_id: int) -> None:
        now = time.monotonic()
        if len(self._unknown) >= MAX_SCHEMAS:
            self._unknown = {k: until for k, until in self._unknown.items() if until > now}
            while len(self._unknown) >= MAX_SCHEMAS:
                del self._unknown[next(iter(self._unknown))]
        self._unknown[schema_id] = now + UNKNOWN_FOR

    async def register_output(self, topic: str) -> int:
        """Register ReplayComparisonEvent under ``<topic>-value``; its schema id."""
        return await self.register(topic, codec.COMPARISON_SCHEMA)

    async def register(self, topic: str, schema: str) -> int:
        """Register a schema of ``schemas/`` under ``<topic>-value``; its schema id."""
        subject = f"{topic}-value"
        text = codec.schema_text(schema)
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: isinstance(e, SchemaRegistryError) and unrouted(e)),
                wait=wait_exponential(multiplier=self.unrouted_wait, max=2.0),
                stop=stop_after_attempt(UNROUTED_TRIES),
                reraise=True,
            ):
                with attempt:
                    return int(await self._client.register_schema(subject, Schema(text, "AVRO")))
        except SchemaRegistryError as exc:
            if unrouted(exc):
                raise ConfigError(
                    f"the schema registry URL {self.url} answered 404 with no registry error, "
                    f"{UNROUTED_TRIES} times, to register {schema} under {subject!r}: it does not name a "
                    "Confluent-compatible API; set REPLAYWATCH_SCHEMA_REGISTRY_URL to one (on Apicurio "
                    "Registry: http://<host>:8080/apis/ccompat/v7)"
                ) from None
            if exc.http_status_code == 409:
                raise ConfigError(
                    f"the schema registry refuses {schema} under {subject!r} as incompatible with "
                    f"the versions there ({exc.error_message}); check the subject's compatibility level"
                ) from None
            raise _error(exc, f"register {schema} under {subject!r}") from None
        except (http_client.TransportError, OSError) as exc:
            raise self._unreachable(exc) from exc
        raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover

    def _unreachable(self, exc: Exception) -> TransientError:
        return TransientError(f"the schema registry at {self.url} is unreachable: {type(exc).__name__}: {exc}")


def _writer_schema(schema_id: int, schema: Schema) -> Any:
    if (schema.schema_type or "AVRO") != "AVRO":
        return IncompatibleSchema(f"schema id {schema_id} is a {schema.schema_type} schema, not Avro")
    try:
        return codec.parse_writer(json.loads(schema.schema_str or ""))
    except IncompatibleSchema as exc:
        return IncompatibleSchema(f"schema id {schema_id}: {exc}")
    except Exception as exc:  # fastavro raises several kinds on a schema it cannot parse
        return IncompatibleSchema(f"schema id {schema_id} does not parse as Avro: {type(exc).__name__}: {exc}")


def unrouted(exc: SchemaRegistryError) -> bool:
    """A 404 that carries no registry error code: the registry's API did not answer it."""
    return bool(exc.http_status_code == 404 and (exc.error_code is None or exc.error_code < 0))


def _error(exc: SchemaRegistryError, doing: str) -> Exception:
    status = exc.http_status_code
    if status in (401, 403):
        return ServiceRefused(
            f"the schema registry refused to {doing} ({status}: {exc.error_message}); check "
            "REPLAYWATCH_SCHEMA_REGISTRY_USER_INFO"
        )
    if status in (408, 429) or status >= 500:
        return TransientError(f"the schema registry could not {doing} ({status}: {exc.error_message})")
    return ConfigError(f"the schema registry answered {status} to {doing}: {exc.error_message}")
