"""confluent-kafka's own registry clients, as a producer and a consumer that no one here
wrote would configure them against a Confluent-compatible registry.

From confluent-kafka 2.13 the serializers look the subject up through the registry's
"associations" API by default, which Apicurio's compatibility API does not answer (the
request hangs). Producers of a plain Confluent-compatible registry name the subject by
topic (TopicNameStrategy), the long-standing default; the client also gets a timeout,
so that a registry that does not answer fails a test instead of hanging it."""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

TOPIC_NAMES: dict[str, Any] = {"subject.name.strategy": topic_subject_name_strategy}


def client(url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url, "timeout": 10})


def serializer(registry: SchemaRegistryClient, schema: str) -> AvroSerializer:
    serialize: AvroSerializer = AvroSerializer(registry, schema, conf=dict(TOPIC_NAMES))
    return serialize


def deserializer(registry: SchemaRegistryClient) -> AvroDeserializer:
    deserialize: AvroDeserializer = AvroDeserializer(registry, conf=dict(TOPIC_NAMES))
    return deserialize
