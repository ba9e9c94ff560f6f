"""When a step applies now: `applies()` says go (None), skip it (`Skip`, with the
reason recorded on the delivery), or wait for it (`Defer` until a time).

Pure functions of the step, the delivery and the time (and the guard's current state,
for brakes and open circuits); the engine's `decide()` asks before the first attempt of
each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from cascade_notify.models import Delivery, Step

if TYPE_CHECKING:
    from cascade_notify.resilience import Guard

#: The least time a call task must have between the end of the quiet hours and the
#: delivery's expiry (seconds): a task nobody can do in time is not created.
CALL_SLOT = 1800.0


@dataclass(frozen=True, slots=True)
class Skip:
    """The step does not apply to this delivery: pass over it, recording why."""

    reason: str  # no_address, address_gone, opted_out, category, quiet_hours, brake_*, ...
    detail: str


@dataclass(frozen=True, slots=True)
class Defer:
    """The step applies, but not before `until` (the end of the recipient's quiet hours)."""

    until: float
    detail: str


def applies(
    step: Step, delivery: Delivery, now: float, guard: Guard | None = None
) -> Skip | Defer | None:
    """Whether `step` applies to `delivery` at `now`: None to go on, else skip or defer.

    Circuits are not asked here: the engine picks the first provider whose circuit is
    closed, and skips the step (`circuit_open`) when none is.
    """
    reason = skip_reason(step, delivery, now)
    if reason is not None:
        return Skip(*reason)
    quiet = quiet_until(step, delivery, now)
    if quiet is not None:
        until, detail = quiet
        slot = CALL_SLOT if step.channel == "call" else 0.0
        if step.quiet_wait and until + slot < delivery.expires_ts:
            return Defer(until, detail)
        if step.quiet_wait:
            detail += "; no time is left for it before the delivery expires"
        return Skip("quiet_hours", detail)
    if guard is not None:
        braked = guard.brake(step, delivery, now)
        if braked is not None:
            return Skip(*braked)
    return None


def skip_reason(step: Step, delivery: Delivery, now: float) -> tuple[str, str] | None:
    """Why `step` can never apply to this delivery, or None: the recipient's addresses,
    opt-outs and the message's category (not the time of day)."""
    recipient = delivery.recipient
    if recipient.address(step.channel) is None:
        return "no_address", f"the recipient has no {step.channel} address"
    if (gone := delivery.unusable.get(step.channel)) is not None:
        return "address_gone", gone
    if step.channel in recipient.opted_out:
        return "opted_out", f"the recipient opted out of {step.channel}"
    category = delivery.message.category
    if step.categories is not None and category not in step.categories:
        allowed = ", ".join(sorted(step.categories))
        return "category", f"{category} messages are not sent on this step (only {allowed})"
    return None


def quiet_until(step: Step, delivery: Delivery, now: float) -> tuple[float, str] | None:
    """When the step's quiet hours end, if `now` is within them in the recipient's time
    zone (UTC when unknown), with a line saying so; None outside them."""
    if step.quiet_hours is None:
        return None
    zone = ZoneInfo(delivery.recipient.timezone or "UTC")
    local = datetime.fromtimestamp(now, zone)
    minute = local.hour * 60 + local.minute
    start, end = step.quiet_hours
    inside = start <= minute < end if start <= end else minute >= start or minute < end
    if not inside:
        return None
    ends = local.replace(hour=end // 60, minute=end % 60, second=0, microsecond=0)
    if ends <= local:
        ends += timedelta(days=1)
    # wall-clock arithmetic in the zone: the end is the local time, whatever DST did
    until = datetime(ends.year, ends.month, ends.day, ends.hour, ends.minute, tzinfo=zone)
    return until.timestamp(), f"{local:%H:%M} in {zone.key} is within quiet hours"


__all__ = ["CALL_SLOT", "Defer", "Skip", "applies", "quiet_until", "skip_reason"]
