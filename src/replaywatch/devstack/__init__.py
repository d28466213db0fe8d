"""Starts and stops a real local stack: Apache Kafka, PostgreSQL and moto's S3."""

from replaywatch.devstack.stack import SERVICES, Stack, default_dir

__all__ = ["SERVICES", "Stack", "default_dir"]
