"""Seeing what happened, read-only: delivery timelines, statistics and charts, log
masking, metrics (OpenTelemetry, Prometheus) and `cascade-notify simulate`.

A home kept for that work (the observability and routing issues): modules here read
the stores and the events, and never write state (an import contract says what they
may import: nothing that drives a delivery, and never the notifier).
"""
