"""Retries: how long to wait before trying a provider again.

Retries are timers in the store, not sleeps in a process, so they survive a
restart; tenacity supplies the backoff strategy.
"""

from __future__ import annotations

from typing import cast

from tenacity import RetryCallState, wait_exponential_jitter

from cascade_notify.models import Step


class _AttemptNumber:
    """The one field of tenacity's RetryCallState its wait strategies read."""

    def __init__(self, number: int) -> None:
        self.attempt_number = number


def backoff(step: Step, tries: int) -> float:
    """Exponential backoff with jitter before retry number `tries` (tenacity's strategy)."""
    wait = wait_exponential_jitter(initial=step.retry_initial, max=step.retry_max)
    return float(wait(cast(RetryCallState, _AttemptNumber(tries))))
