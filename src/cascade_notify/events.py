"""Events: what happened to a delivery, as it happens, for timelines, metrics and alerts."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from cascade_notify import _logmask
from cascade_notify.models import AttemptStatus

if TYPE_CHECKING:
    from cascade_notify.models import Attempt, Delivery, Receipt
    from cascade_notify.stores.base import Transition

log = _logmask.logger("cascade_notify.events")


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a delivery, for timelines, metrics and alerts."""

    kind: str  # created, sending, outcome, skipped, receipt, finished, throttled, brake, breaker,
    # signal, address_linked, link_refused
    delivery_id: str
    ts: float
    channel: str | None = None
    provider: str | None = None
    status: str | None = None
    detail: str | None = None
    #: The attempt an event is about (`sending`, `outcome`; `receipt` where known).
    attempt_id: str | None = None
    #: The step's index in the policy (`sending`, `outcome`, `skipped`).
    step: int | None = None
    #: When what ended began: the attempt's start on `outcome`, the delivery's creation
    #: on `finished` (so a listener in any process can measure how long it took).
    since: float | None = None


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One outcome webhook to post: its `webhook-id`, kind, delivery, time and data.

    The store numbers a delivery's events (`seq`, from 1) as it writes them."""

    id: str
    kind: str  # finished, attempt, receipt, skipped
    delivery_id: str
    ts: float
    data: dict[str, Any]


Listener = Callable[[Event], None]


def emit(listeners: Sequence[Listener], event: Event) -> None:
    """Hand `event` to each listener; a failing listener is logged, never fatal."""
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            log.exception("event listener %r failed", listener)


def transition_events(
    delivery_id: str, change: Transition, now: float, created_ts: float | None = None
) -> list[Event]:
    """The events a written transition means, in the order they happened: outcomes,
    skips, then a send starting or the cascade finishing (`created_ts`: when the
    delivery was created, the `since` of `finished`)."""
    found: list[Event] = []
    starting: list[Event] = []
    for a in change.attempts:
        if a.status is AttemptStatus.SENDING:
            starting.append(
                Event(
                    "sending", delivery_id, now, channel=a.channel, provider=a.provider,
                    attempt_id=a.id, step=a.step, since=a.started_ts,
                )
            )  # fmt: skip
        else:
            found.append(
                Event(
                    "outcome", delivery_id, now, channel=a.channel, provider=a.provider,
                    status=a.status.value, detail=a.error, attempt_id=a.id, step=a.step,
                    since=a.started_ts,
                )
            )  # fmt: skip
    for skip in change.skipped:
        found.append(
            Event(
                "skipped", delivery_id, now, channel=skip.channel, status=skip.reason,
                detail=skip.detail, step=skip.step,
            )
        )  # fmt: skip
    found.extend(starting)
    if change.status is not None:
        found.append(
            Event(
                "finished", delivery_id, now, channel=change.channel, status=change.status.value,
                since=created_ts,
            )
        )  # fmt: skip
    return found


#: The kinds of outcome webhook (`events: kinds:`), in the order a change's are written.
OUTBOX_KINDS: Final = ("attempt", "skipped", "finished", "receipt")


def new_event_id() -> str:
    """A fresh `webhook-id`: unique per event, the same on every retry of it."""
    return "evt_" + os.urandom(16).hex()  # 128 random bits, a quarter of uuid4()'s cost


def _event(kind: str, delivery_id: str, ts: float, data: dict[str, Any]) -> OutboxEvent:
    return OutboxEvent(new_event_id(), kind, delivery_id, ts, data)


def _attempt_data(a: Attempt) -> dict[str, Any]:
    return {
        "attempt_id": a.id,
        "step": a.step,
        "channel": a.channel,
        "provider": a.provider,
        "status": a.status.value,
        "provider_message_id": a.provider_message_id,
        "error": a.error,
        "code": a.code,
        "cost": a.cost,
        "currency": a.currency,
    }


def outbox_events(
    delivery_id: str, change: Transition, now: float, kinds: frozenset[str]
) -> list[OutboxEvent]:
    """The outcome webhooks of the `kinds` wanted that a transition means, in the order
    `transition_events` gives them: outcomes, skips, then the end. (An attempt about to be
    sent is not an outcome: it is told once its outcome is known.)"""
    found: list[OutboxEvent] = []
    if "attempt" in kinds:
        for a in change.attempts:
            if a.status is not AttemptStatus.SENDING:
                found.append(_event("attempt", delivery_id, now, _attempt_data(a)))
    if "skipped" in kinds:
        for skip in change.skipped:
            data = {
                "step": skip.step, "channel": skip.channel, "reason": skip.reason,
                "detail": skip.detail,
            }  # fmt: skip
            found.append(_event("skipped", delivery_id, skip.ts, data))
    if "finished" in kinds and change.status is not None:
        data = {"status": change.status.value, "channel": change.channel}
        found.append(_event("finished", delivery_id, change.finished_ts or now, data))
    return found


def receipt_event(receipt: Receipt, delivery_id: str, attempt_id: str) -> OutboxEvent:
    """The `receipt` webhook of a receipt recorded for the first time."""
    data = {
        "attempt_id": attempt_id,
        "provider": receipt.provider,
        "provider_message_id": receipt.provider_message_id,
        "status": receipt.status.value,
        "code": receipt.code,
        "error": receipt.error,
        "cost": receipt.cost,
    }
    return _event("receipt", delivery_id, receipt.ts, data)


def cancelled_event(delivery: Delivery) -> OutboxEvent:
    """The `finished` webhook of a delivery `cancel()` ended."""
    data = {"status": delivery.status.value, "channel": delivery.channel}
    return _event("finished", delivery.id, delivery.finished_ts or 0.0, data)
