"""Adapters to storage: PostgreSQL (projections, offsets, outbox) and artifacts (S3)."""
