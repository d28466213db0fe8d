"""The commit point: ordered writes of prepared batches to PostgreSQL."""
