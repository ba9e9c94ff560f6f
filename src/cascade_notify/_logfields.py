"""The structured fields of the library's log records, and the lines a transition writes.

Every record about one delivery carries, in `extra` (so a JSON formatter or structlog
finds them as attributes of the record), those of `delivery_id`, `step`, `channel`,
`provider` and `attempt_id` it knows, and `outcome` / `status` where one is reported.
Levels: one INFO line per attempt outcome and per delivery's end; DEBUG for the rest
(a call starting, a step skipped, a receipt taken in). A line never shows an address:
error texts pass through the loggers' `SecretFilter` (see `_logmask`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cascade_notify.models import Attempt, AttemptStatus

if TYPE_CHECKING:
    from cascade_notify.stores.base import Transition

#: The field names, in the order a formatter may print them.
FIELDS = ("delivery_id", "step", "channel", "provider", "attempt_id")


def attempt_fields(attempt: Attempt, **more: Any) -> dict[str, Any]:
    """The `extra` of a record about `attempt`."""
    return {
        "delivery_id": attempt.delivery_id,
        "step": attempt.step,
        "channel": attempt.channel,
        "provider": attempt.provider,
        "attempt_id": attempt.id,
        **more,
    }


def log_transition(log: logging.Logger, delivery_id: str, change: Transition) -> None:
    """The lines one written transition means (nothing built when the level is off)."""
    if not log.isEnabledFor(logging.INFO):
        return
    debug = log.isEnabledFor(logging.DEBUG)
    for attempt in change.attempts:
        if attempt.status is AttemptStatus.SENDING:
            if debug:
                log.debug(
                    "delivery %s step %d: calling %s on %s (attempt %s)",
                    delivery_id, attempt.step, attempt.provider, attempt.channel, attempt.id,
                    extra=attempt_fields(attempt),
                )  # fmt: skip
            continue
        why = f" ({attempt.code}: {attempt.error})" if attempt.code else (
            f" ({attempt.error})" if attempt.error else ""
        )  # fmt: skip
        log.info(
            "delivery %s step %d: %s on %s %s%s (attempt %s)",
            delivery_id, attempt.step, attempt.provider, attempt.channel, attempt.status.value,
            why, attempt.id,
            extra=attempt_fields(attempt, outcome=attempt.status.value, code=attempt.code),
        )  # fmt: skip
    if debug:
        for skip in change.skipped:
            log.debug(
                "delivery %s step %d: %s skipped (%s)",
                delivery_id, skip.step, skip.channel, skip.reason,
                extra={
                    "delivery_id": delivery_id, "step": skip.step, "channel": skip.channel,
                    "reason": skip.reason,
                },
            )  # fmt: skip
    if change.status is not None:
        where = f" on {change.channel}" if change.channel else ""
        log.info(
            "delivery %s %s%s",
            delivery_id, change.status.value, where,
            extra={
                "delivery_id": delivery_id, "step": change.step, "channel": change.channel,
                "status": change.status.value,
            },
        )  # fmt: skip
    elif debug and change.wake_ts is not None and not change.attempts:
        log.debug(
            "delivery %s step %s: waiting until %.3f", delivery_id, change.step, change.wake_ts,
            extra={"delivery_id": delivery_id, "step": change.step},
        )  # fmt: skip


__all__ = ["FIELDS", "attempt_fields", "log_transition"]
