"""The Prometheus endpoint of `serve` and `worker`: the exporter, subscribed to the
notifier, and how it reads the store and the breakers at each scrape."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cascade_notify.notifier import Notifier
from cascade_notify.observe.metrics import Metrics, TelemetryError
from cascade_notify.stores import Counting

if TYPE_CHECKING:
    from cascade_notify.observe.prometheus import Prometheus, Refresh


def exporter(notifier: Notifier) -> Prometheus:
    """A Prometheus exporter listening to `notifier`'s events (`TelemetryError` naming
    the `otel` extra when prometheus-client is missing)."""
    from cascade_notify.observe.prometheus import Prometheus

    made = Prometheus()
    notifier.subscribe(made)
    return made


def refresher(notifier: Notifier) -> Refresh:
    """What a scrape reads: the store's unfinished deliveries and every breaker."""

    async def refresh(metrics: Metrics) -> None:
        if not notifier.running:
            return
        store = notifier.store
        await metrics.refresh(store if isinstance(store, Counting) else None, notifier.breakers)

    return refresh


__all__ = ["TelemetryError", "exporter", "refresher"]
