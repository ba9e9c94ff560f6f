"""Surviving outages: retries, and the `Guard` the engine consults.

Retries are timers in the store, not sleeps in a process, so they survive a
restart; tenacity supplies the backoff strategy. A `Guard` holds circuit
breakers, rate limits and brakes; the engine asks it before each step and
send, and tells it every outcome.
"""

from __future__ import annotations

from typing import Protocol, cast

from tenacity import RetryCallState, wait_exponential_jitter

from cascade_notify.models import Attempt, Delivery, Step


class _AttemptNumber:
    """The one field of tenacity's RetryCallState its wait strategies read."""

    def __init__(self, number: int) -> None:
        self.attempt_number = number


def backoff(step: Step, tries: int) -> float:
    """Exponential backoff with jitter before retry number `tries` (tenacity's strategy)."""
    wait = wait_exponential_jitter(initial=step.retry_initial, max=step.retry_max)
    return float(wait(cast(RetryCallState, _AttemptNumber(tries))))


class Guard(Protocol):
    """Outage and cost protection the engine consults (circuit breakers, rate limits,
    brakes against SMS pumping). Its answers are reads of its current state, so
    `decide()` stays a function of (delivery, time, guard state)."""

    def available(self, provider: str, now: float) -> bool:
        """False while `provider`'s circuit is open (outage): do not send there now."""
        ...

    def brake(self, step: Step, delivery: Delivery, now: float) -> tuple[str, str] | None:
        """(reason, detail) when a brake forbids this step for this delivery, else None."""
        ...

    async def acquire(self, provider: str, delivery: Delivery, now: float) -> float:
        """Take a send permit for `provider`: 0 to go now, else seconds until one frees."""
        ...

    def observe(self, attempt: Attempt, now: float) -> None:
        """Learn from an attempt the engine just wrote (outcome, timeout, receipt)."""
        ...
