"""Events: what happened to a delivery, as it happens, for timelines, metrics and alerts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cascade_notify import _logmask
from cascade_notify.models import AttemptStatus

if TYPE_CHECKING:
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
