"""Noise envelopes per cohort, learned from the re-runs the stream carries, and the
adaptive judgment that alerts only outside them. Pure: plain functions over plain data."""
