"""Rate limits and brakes as plain objects: the arithmetic, no state sharing.

A rate limit is a token bucket kept as GCRA (the generic cell rate
algorithm): one number per bucket, its *theoretical arrival time* `tat`, so
a store can keep it with one atomic `tat := max(tat, now) + interval`. A
reservation names the moment the send may go, so a burst queues in order
instead of every waiting delivery racing for each freed token.

Brakes count sms and call sends per recipient number, per number prefix and
in money, per clock hour, and allow only listed countries.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import phonenumbers

from cascade_notify.resilience.settings import BrakeSettings

#: The channels brakes apply to: the ones a toll-fraud ring is paid for.
BRAKED: Final = frozenset({"sms", "call"})
HOUR: Final = 3600.0


class TokenBucket:
    """`per_second` sends a second, `burst` of them at once (1: evenly spaced).

    `reserve(now)` takes the next slot and returns when it is. The same
    arithmetic runs in a store: `advance()` is the atomic update, `slot()`
    reads the answer from its result.
    """

    def __init__(self, per_second: float, burst: int = 1) -> None:
        self.interval = 1.0 / per_second
        self.tolerance = (burst - 1) * self.interval
        self.tat = 0.0

    def reserve(self, now: float) -> float:
        self.tat = self.advance(self.tat, now)
        return self.slot(self.tat, now)

    def advance(self, tat: float, now: float) -> float:
        return max(tat, now) + self.interval

    def slot(self, tat_after: float, now: float) -> float:
        """When the send that moved the bucket to `tat_after` may go (never before `now`)."""
        return max(now, tat_after - self.interval - self.tolerance)


@dataclass(frozen=True, slots=True)
class Count:
    """One brake counter: its key in the current hour, its limit and how to say it tripped."""

    key: str
    limit: float
    reason: str
    what: str


@lru_cache(maxsize=65_536)
def country_of(number: str) -> str | None:
    """The ISO country of an E.164 number, or None if no country owns it."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    region: str | None = phonenumbers.region_code_for_number(parsed)
    return region if region and region != "001" else None


class Brakes:
    """One policy's brakes, read as counters and a country check."""

    def __init__(self, policy: str, settings: BrakeSettings) -> None:
        self.policy = policy
        self.settings = settings
        allowed = settings.allowed_countries
        self.countries = None if allowed is None else frozenset(allowed)
        self.active = any(
            v is not None
            for v in (
                settings.sms_per_recipient_per_hour,
                settings.calls_per_recipient_per_hour,
                settings.sms_per_prefix_per_hour,
                settings.calls_per_prefix_per_hour,
                settings.cost_per_hour,
                allowed,
            )
        )

    def country(self, channel: str, number: str) -> tuple[str, str] | None:
        """(reason, detail) if `number`'s country is not allowed, else None."""
        if self.countries is None:
            return None
        found = country_of(number)
        if found in self.countries:
            return None
        where = found or "no country"
        allowed = ", ".join(sorted(self.countries))
        return "brake_country", f"{channel} to {where} is not allowed (allowed: {allowed})"

    def counts(self, channel: str, number: str, now: float) -> list[Count]:
        """The send counters a send on `channel` to `number` adds one to, this hour."""
        s = self.settings
        hour = int(now // HOUR)
        prefix = number.lstrip("+")[: s.prefix_digits]
        sms = channel == "sms"
        per_number = s.sms_per_recipient_per_hour if sms else s.calls_per_recipient_per_hour
        per_prefix = s.sms_per_prefix_per_hour if sms else s.calls_per_prefix_per_hour
        noun = "SMS" if sms else "calls"
        found = []
        if per_number is not None:
            found.append(
                Count(
                    f"brake:{channel}:to:{number}@{hour}",
                    per_number,
                    "brake_recipient",
                    f"{noun} to this number",
                )
            )
        if per_prefix is not None:
            found.append(
                Count(
                    f"brake:{channel}:prefix:{prefix}@{hour}",
                    per_prefix,
                    "brake_prefix",
                    f"{noun} to numbers starting +{prefix}",
                )
            )
        return found

    def cost(self, now: float) -> Count | None:
        """The policy's money counter this hour, if it has a budget."""
        budget = self.settings.cost_per_hour
        if budget is None:
            return None
        key = f"brake:cost:{self.policy}@{int(now // HOUR)}"
        return Count(key, budget, "brake_cost", f"spent on sms and calls by policy {self.policy}")
