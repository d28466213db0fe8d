"""Starts and stops a real local stack: Apache Kafka, PostgreSQL, versitygw (S3) and Apicurio Registry."""

from replaywatch.devstack.stack import SERVICES, Stack, default_dir

__all__ = ["SERVICES", "Stack", "default_dir"]
