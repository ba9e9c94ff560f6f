"""When a step applies now: `applies()` says go (None), skip it (`Skip`, with the
reason recorded on the delivery), or wait for it (`Defer` until a time).

Pure functions of the step, the delivery and the time (and the guard's current state,
for brakes and open circuits); the engine's `decide()` asks before the first attempt of
each step.

And how a step shapes its text (`step_text`, `Limit`, `fit`): the message's text, or
`Message.overrides[channel]["text"]`, transliterated where the step says so, then held to
the step's limit (the smallest `max_length` of its providers; on sms also the segments of
`max_segments` and of the gateways' own caps). A text over it follows `on_too_long`:
`skip` the step (reason `too_long`, decided before anything is sent), `truncate` it to the
limit, or `split` it into several messages each within the limit, sent one after the
other in the same attempt. On sms a `split` is several separate SMS of at most
`max_segments` segments each, not one longer concatenated SMS.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from cascade_notify.models import Delivery, Message, Step
from cascade_notify.providers.sms import segments

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


@dataclass(frozen=True, slots=True)
class Limit:
    """How long a step's text may be: `chars` characters, and on sms `segments` segments
    (None: no limit of that kind)."""

    chars: int | None = None
    segments: int | None = None

    def fits(self, text: str) -> bool:
        if self.chars is not None and len(text) > self.chars:
            return False
        return self.segments is None or segments.count(text).segments <= self.segments

    def describe(self, text: str) -> str:
        if self.segments is not None:
            billed = segments.count(text)
            if billed.segments > self.segments:
                return (
                    f"the text is {billed.segments} {billed.encoding} segments; "
                    f"this step takes at most {self.segments}"
                )
        return f"the text is {len(text)} characters; this step takes at most {self.chars}"


def step_limit(step: Step, providers: Iterable[Any]) -> Limit:
    """The limit of `step` given its providers (anything with `max_length` and, for a
    gateway's own cap, `max_segments`): the smallest of each, and `step.max_segments`."""
    chars = [n for p in providers if (n := getattr(p, "max_length", None)) is not None]
    caps = [n for p in providers if (n := getattr(p, "max_segments", None)) is not None]
    if step.channel == "sms" and step.max_segments is not None:
        caps.append(step.max_segments)
    return Limit(
        min(chars, default=None), min(caps, default=None) if step.channel == "sms" else None
    )


def step_text(step: Step, message: Message, text: str | None = None) -> str:
    """The text `step` sends: `text` (what a provider was handed), else the channel's
    override or the message's text; transliterated where the step says so."""
    if text is None:
        given = message.overrides.get(step.channel, {}).get("text")
        text = given if isinstance(given, str) else message.text
    return segments.transliterate(text) if step.transliterate else text


def too_long(step: Step, message: Message, limit: Limit) -> Skip | None:
    """`Skip("too_long")` when the step's text is over its limit and `on_too_long` is
    `skip`; None when it fits or will be truncated or split."""
    text = step_text(step, message)
    if step.on_too_long != "skip" or limit.fits(text):
        return None
    return Skip("too_long", limit.describe(text))


def fit(step: Step, text: str, limit: Limit) -> list[str]:
    """The messages that carry `text` within `limit`: itself when it fits; else cut to
    the limit (`truncate`, marked `…`, or `...` on a GSM-7 SMS) or in parts (`split`),
    both broken at a space where one is near."""
    if limit.fits(text) or step.on_too_long == "skip":
        return [text]
    if step.on_too_long == "truncate":
        mark = "…" if step.channel != "sms" or not segments.is_gsm7(text) else "..."
        return [_at_space(_prefix(text, limit, reserve=mark)).rstrip() + mark]
    parts: list[str] = []
    rest = text
    while rest:
        if limit.fits(rest):
            parts.append(rest)
            break
        head = _at_space(_prefix(rest, limit))
        parts.append(head.rstrip())
        rest = rest[len(head) :].lstrip()
    return parts


def _at_space(head: str) -> str:
    """`head` cut back to its last space, when one is in its last third (whole words)."""
    cut = head.rfind(" ", len(head) * 2 // 3)
    return head[:cut] if cut > 0 else head


def _prefix(text: str, limit: Limit, reserve: str = "") -> str:
    """The longest start of `text` that fits `limit` with `reserve` after it."""
    low, high = 0, len(text)
    while low < high:  # the fitting prefixes are an initial run: bisect for the longest
        middle = (low + high + 1) // 2
        if limit.fits(text[:middle] + reserve):
            low = middle
        else:
            high = middle - 1
    return text[: max(low, 1)]


__all__ = [
    "CALL_SLOT",
    "Defer",
    "Limit",
    "Skip",
    "applies",
    "fit",
    "quiet_until",
    "skip_reason",
    "step_limit",
    "step_text",
    "too_long",
]
