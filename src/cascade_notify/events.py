"""Events: what happened to a delivery, as it happens, for timelines, metrics and alerts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("cascade_notify.events")


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a delivery, for timelines, metrics and alerts."""

    kind: str  # created, sending, outcome, skipped, receipt, finished, throttled, brake, breaker
    delivery_id: str
    ts: float
    channel: str | None = None
    provider: str | None = None
    status: str | None = None
    detail: str | None = None


Listener = Callable[[Event], None]


def emit(listeners: Sequence[Listener], event: Event) -> None:
    """Hand `event` to each listener; a failing listener is logged, never fatal."""
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            log.exception("event listener %r failed", listener)
