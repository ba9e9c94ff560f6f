"""Taking sent messages back: which attempts a finished delivery makes stale, and the
calls that withdraw them. `engine.decide()` asks `superseded()` before it finishes a
delivery; the engine's driver runs `carry_out()` between the two writes.

- A success supersedes the attempts elsewhere that were sent but never confirmed: on a
  provider that withdraws always (a call task: nobody should call about a message that
  arrived), or that can withdraw on a step with `withdraw_superseded` (a messenger).
- A delivery that ends without one (exhausted, expired) withdraws what is always
  withdrawn: the call task nobody can act on any more.

The intent (`withdrawing`) is written before the calls and their outcomes (`withdrawn`,
or `abandoned` with the reason) after, like a send; a crash in between withdraws again,
which is harmless (a deleted message is gone, a cancellation carries a stable id).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from cascade_notify import _logmask
from cascade_notify._text import TEXT_LIMIT, storable
from cascade_notify.clock import Clock
from cascade_notify.models import Attempt, AttemptStatus, Delivery, ReceiptStatus
from cascade_notify.providers.base import Provider, WithdrawRequest
from cascade_notify.stores.base import Transition

log = _logmask.logger("cascade_notify.engine")

#: Sent, and possibly still in front of the customer: what a finish may withdraw.
_UNCONFIRMED: Final = frozenset(
    {
        AttemptStatus.ACCEPTED,
        AttemptStatus.UNKNOWN,
        AttemptStatus.TIMED_OUT,
        AttemptStatus.WITHDRAWING,
    }
)
_CONFIRMED: Final = frozenset({ReceiptStatus.DELIVERED, ReceiptStatus.READ, ReceiptStatus.FAILED})
#: Written by a withdrawal: not a provider call's outcome.
WITHDRAWAL: Final = frozenset({AttemptStatus.WITHDRAWING, AttemptStatus.WITHDRAWN})


class WithdrawTraits(Protocol):
    """What `superseded()` reads of a provider."""

    @property
    def withdraws(self) -> bool: ...

    @property
    def withdraw_always(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Take these attempts' messages back (each is `withdrawing` in the transition):
    `winner` succeeded and superseded them; None: the delivery ends without a success,
    for `reason`."""

    attempts: tuple[Attempt, ...]
    winner: Attempt | None
    reason: str = "delivered_elsewhere"


def superseded(
    delivery: Delivery, winner: Attempt | None, providers: Mapping[str, WithdrawTraits]
) -> list[Attempt]:
    """The attempts to withdraw as the delivery finishes: sent (the provider gave an id),
    never confirmed either way, on a provider that can withdraw, and either always
    withdrawn, or (after a success) on a `withdraw_superseded` step."""
    found = []
    for attempt in delivery.attempts:
        if (
            attempt is winner
            or attempt.status not in _UNCONFIRMED
            or attempt.provider_message_id is None
            or any(r.status in _CONFIRMED for r in attempt.receipts)
        ):
            continue
        traits = providers.get(attempt.provider)
        if traits is None or not traits.withdraws:
            continue
        step = delivery.steps[attempt.step]
        if traits.withdraw_always or (winner is not None and step.withdraw_superseded):
            found.append(attempt)
    return found


def intend(
    change: Transition, stale: list[Attempt], winner: Attempt | None, now: float, reason: str
) -> Withdraw:
    """Write each stale attempt as `withdrawing` into `change` (over any other version of
    it there); the action that withdraws them."""
    ids = {a.id for a in stale}
    change.attempts[:] = [a for a in change.attempts if a.id not in ids]
    intents = []
    for attempt in stale:
        intent = attempt.copy()
        intent.status = AttemptStatus.WITHDRAWING
        change.attempts.append(intent)
        intents.append(intent)
    change.wake_ts = now  # due again once the lease lapses, should we die mid-call
    change.release = False
    return Withdraw(tuple(intents), winner, reason)


async def carry_out(
    providers: Mapping[str, Provider], clock: Clock, delivery: Delivery, action: Withdraw
) -> list[Attempt]:
    """Ask each stale attempt's provider to take its message back; their outcomes."""
    done = []
    where = None if action.winner is None else action.winner.channel
    for attempt in action.attempts:
        provider = providers[attempt.provider]
        request = WithdrawRequest(
            attempt_id=attempt.id,
            delivery_id=delivery.id,
            provider_message_id=attempt.provider_message_id or "",
            address=delivery.recipient.address(attempt.channel) or "",
            reason=action.reason,
            delivered_on=where,
        )
        closed = attempt.copy()
        closed.finished_ts = clock.now()
        try:
            withdrawn = await provider.withdraw(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not withdraw a message of %s: %s", provider.name, exc)
            closed.status = AttemptStatus.ABANDONED
            closed.error = storable(f"could not withdraw: {exc}", TEXT_LIMIT)
        else:
            closed.status = AttemptStatus.WITHDRAWN
            why = f"delivered on {where}" if where is not None else action.reason
            closed.error = (
                f"withdrawn: {why}" if withdrawn else "withdrawn: the provider no longer had it"
            )
        done.append(closed)
    return done


__all__ = ["WITHDRAWAL", "Withdraw", "WithdrawTraits", "carry_out", "intend", "superseded"]
