"""CloudEvents in the Kafka protocol binding's binary mode, made by the ``cloudevents``
SDK: the attributes ride as ``ce_*`` headers (``content-type`` for the data's type),
the data is the record's value, the key is the cohort (alerts) or the run (comparisons).

Alerts go out as ``dev.replaywatch.alert.opened`` and ``dev.replaywatch.alert.resolved``,
with JSON data; comparison events, when asked, carry the same headers around their
Avro value (``dev.replaywatch.comparison.<verdict>``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import orjson
from cloudevents.core.bindings.kafka import to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from replaywatch.rates.alerts import Transition

ALERT_TYPE: Final = "dev.replaywatch.alert."
COMPARISON_TYPE: Final = "dev.replaywatch.comparison."
Message = tuple[bytes, bytes, list[tuple[str, bytes]]]
"""(key, value, headers) of a Kafka record."""


def source_of(group: str, topic: str) -> str:
    return f"/replaywatch/{quote(group, safe='')}/{quote(topic, safe='')}"


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def alert_message(t: Transition, source: str, public_url: str | None = None) -> Message:
    """An alert that opened or resolved, as a binary-mode CloudEvent: its id is the same
    for the same transition of the same alert (a re-publish is recognisably the same)."""
    data: dict[str, Any] = t.data()
    if public_url:
        base = public_url.rstrip("/")
        cohort = quote(t.cohort, safe="")
        end = t.start_ms + t.width_ms
        data["links"] = {
            "cohort": f"{base}/cohorts/{cohort}",
            "comparisons": f"{base}/cohorts/{cohort}/comparisons?policy={quote(t.policy, safe='')}"
                           f"&from={t.start_ms}&to={end}&drifted=1",
        }  # fmt: skip
    event = CloudEvent(
        {
            "id": f"{t.alert_id}:{t.kind}", "source": source, "type": ALERT_TYPE + t.kind,
            "subject": f"{t.cohort}#{t.policy}", "time": _at(t.start_ms + t.width_ms),
            "datacontenttype": "application/json",
        },
        orjson.dumps(data, option=orjson.OPT_SORT_KEYS),
    )  # fmt: skip
    message = to_binary(event, JSONFormat(), key_mapper=lambda _: t.cohort)
    return t.cohort.encode(), message.value, sorted(message.headers.items())


def comparison_headers(event_id: str, verdict: str, subject: str, detected_at_ms: int,
                       source: str) -> list[tuple[str, bytes]]:  # fmt: skip
    """The CloudEvents headers of a comparison event (its value stays the Avro record)."""
    event = CloudEvent({
        "id": event_id, "source": source, "type": COMPARISON_TYPE + verdict, "subject": subject,
        "time": _at(detected_at_ms), "datacontenttype": "application/avro",
    }, b"")  # fmt: skip
    return sorted(to_binary(event, JSONFormat(), key_mapper=lambda _: None).headers.items())
