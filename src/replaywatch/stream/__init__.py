"""Kafka adapters: the outbox publisher and the dead-letter sink."""
