"""The outcome of a provider call, classified by one pure function."""

from __future__ import annotations

from collections.abc import Sequence

from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.models import Attempt, AttemptStatus, Step
from cascade_notify.providers.base import SendResult
from cascade_notify.providers.sms import segments
from cascade_notify.resilience import backoff

# Which outcome each provider error means; a bare ProviderError is not among them
_OUTCOMES = (
    (TransientError, AttemptStatus.TRANSIENT),
    (UnreachableError, AttemptStatus.UNREACHABLE),
    (PermanentError, AttemptStatus.FAILED),
    (UnknownOutcomeError, AttemptStatus.UNKNOWN),
)


def outcome(
    attempt: Attempt, result: SendResult | ProviderError, step: Step, tried: int, now: float
) -> Attempt:
    """The attempt once its call answered `result` (`tried`: attempts on this provider in
    this step so far, this one included). Pure but for the backoff's jitter."""
    done = attempt.copy()
    if isinstance(result, SendResult):
        done.status = AttemptStatus.ACCEPTED
        done.provider_message_id = result.provider_message_id
        done.cost = result.cost
        done.deadline_ts = now + step.timeout
        return done
    done.status = next(s for kind, s in _OUTCOMES if isinstance(result, kind))
    done.error = str(result.args[0]) if result.args else type(result).__name__
    done.code = result.code
    if isinstance(result, UnknownOutcomeError):
        done.deadline_ts = now + step.timeout  # wait for a receipt, do not resend
        return done
    done.finished_ts = now
    if isinstance(result, TransientError):
        done.retry_ts = now + max(backoff(step, tried), result.retry_after or 0.0)
    return done


def bill(attempt: Attempt, settings: object, parts: Sequence[str]) -> None:
    """Fill in what an accepted send costs (`settings`: its provider's): on sms, the
    segments its `parts` were billed as and their encoding; the cost the provider
    reported, else segments x its `price_per_segment`; in its `currency` (default USD)."""
    if attempt.channel == "sms" and parts:
        billed = [segments.count(part) for part in parts]
        attempt.segments = sum(b.segments for b in billed)
        attempt.encoding = "UCS-2" if any(b.encoding == "UCS-2" for b in billed) else "GSM-7"
        price = getattr(settings, "price_per_segment", None)
        if attempt.cost is None and isinstance(price, int | float):
            attempt.cost = attempt.segments * price
    if attempt.cost is not None or attempt.channel == "sms":  # a receipt may bring a price
        currency = getattr(settings, "currency", None)
        attempt.currency = currency if isinstance(currency, str) else "USD"


__all__ = ["bill", "outcome"]
