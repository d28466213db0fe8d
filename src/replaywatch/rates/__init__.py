"""Drift rates per cohort: comparisons counted in windows of event time, windows
closed and rolled up, and alerts when a cohort's rate moves. Pure: plain functions
over plain data."""
