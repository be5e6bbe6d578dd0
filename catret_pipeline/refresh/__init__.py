"""Scheduled and sensor-triggered catalogue refresh (see docs/operations.md)."""
