"""Seeing what happened, read-only: delivery timelines, statistics and charts, log
masking, metrics (OpenTelemetry, Prometheus) and `cascade-notify simulate`.

Modules here read the stores and the events, and never write state (an import
contract says what they may import: nothing that drives a delivery, and never the
notifier). `types` holds what the views return; `compute` the definition of each
figure over `Delivery` objects (the memory store's way; the SQL stores aggregate in
the database); `timeline` one delivery's story; `charts` the optional pictures;
`logs` the log lines' fields and masking; `metrics` the metrics defined over the
events, which `otel` (spans and OpenTelemetry instruments) and `prometheus` (the
`/-/metrics` text) carry, both in the optional extra `otel`.
"""

from cascade_notify.observe.timeline import Entry, Timeline, timeline
from cascade_notify.observe.types import (
    DIMENSIONS,
    DeliveryPage,
    DeliveryQuery,
    DeliverySummary,
    Dimension,
    QueryError,
    Stats,
    StatsRow,
)

__all__ = [
    "DIMENSIONS",
    "DeliveryPage",
    "DeliveryQuery",
    "DeliverySummary",
    "Dimension",
    "Entry",
    "QueryError",
    "Stats",
    "StatsRow",
    "Timeline",
    "timeline",
]
