"""The cascade's state machine.

`decide()` is a pure function: given a delivery as stored and the time, it
says what to do next (send on a provider, wait until a time, poll, finish).
`Engine.advance()` is the thin driver that carries a decision out: one store
write per transition, the provider call between two of them.

A provider call is bracketed by two writes: the attempt is recorded as
`sending` before the request, and its outcome after. A crash between the two
leaves `sending` behind; the next worker reads that as an unknown outcome and
does not resend (unless the provider declares idempotent sends, then it
resends with the same attempt id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Protocol
from zoneinfo import ZoneInfo

from cascade_notify.clock import Clock
from cascade_notify.errors import (
    LeaseLost,
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.events import Event, Listener, emit
from cascade_notify.models import (
    OPEN_ATTEMPT,
    Attempt,
    AttemptStatus,
    Delivery,
    DeliveryStatus,
    SkippedStep,
    Step,
    WaitFor,
    new_id,
)
from cascade_notify.providers.base import Provider, SendRequest, send_classified
from cascade_notify.resilience import Guard, backoff
from cascade_notify.stores.base import Claim, Store, Transition, apply_transition

log = logging.getLogger("cascade_notify.engine")

_MEETS = {
    WaitFor.ACCEPTED: frozenset(
        {AttemptStatus.ACCEPTED, AttemptStatus.DELIVERED, AttemptStatus.READ}
    ),
    WaitFor.DELIVERED: frozenset({AttemptStatus.DELIVERED, AttemptStatus.READ}),
    WaitFor.READ: frozenset({AttemptStatus.READ}),
}
_WAITING = frozenset(
    {AttemptStatus.ACCEPTED, AttemptStatus.UNKNOWN, AttemptStatus.DELIVERED, AttemptStatus.READ}
)


# Which outcome each provider error means; a bare ProviderError is not among them
_OUTCOMES = (
    (TransientError, AttemptStatus.TRANSIENT),
    (UnreachableError, AttemptStatus.UNREACHABLE),
    (PermanentError, AttemptStatus.FAILED),
    (UnknownOutcomeError, AttemptStatus.UNKNOWN),
)


class Traits(Protocol):
    """What `decide()` reads of a provider: its declared capabilities, no I/O."""

    @property
    def idempotent_sends(self) -> bool: ...

    @property
    def poll_interval(self) -> float | None: ...


class Action(Enum):
    SEND = "send"
    WAIT = "wait"
    POLL = "poll"
    FINISH = "finish"


@dataclass(slots=True)
class Decision:
    """What to do next, and the bookkeeping that goes with it in the same write."""

    action: Action
    step: int
    updates: list[Attempt] = field(default_factory=list)
    skipped: list[SkippedStep] = field(default_factory=list)
    provider: str | None = None  # SEND: on which provider
    resend: Attempt | None = None  # SEND: repeat this attempt with its own id
    attempt: Attempt | None = None  # POLL: ask about this one
    wake_ts: float | None = None  # WAIT, POLL: look again at this time
    status: DeliveryStatus | None = None  # FINISH
    channel: str | None = None  # FINISH: where it was delivered

    def send(self, provider: str, resend: Attempt | None = None) -> Decision:
        self.action, self.provider, self.resend = Action.SEND, provider, resend
        return self

    def wait(self, until: float, poll: Attempt | None = None) -> Decision:
        self.action = Action.WAIT if poll is None else Action.POLL
        self.wake_ts, self.attempt = until, poll
        return self


def meets(attempt: Attempt, wait_for: WaitFor) -> bool:
    return attempt.status in _MEETS[wait_for]


def skip_reason(step: Step, delivery: Delivery, now: float) -> tuple[str, str] | None:
    """Why `step` does not apply to this delivery now, or None if it does."""
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
    if step.quiet_hours is not None:
        zone = ZoneInfo(recipient.timezone or "UTC")
        local = datetime.fromtimestamp(now, zone)
        minute = local.hour * 60 + local.minute
        start, end = step.quiet_hours
        inside = start <= minute < end if start <= end else minute >= start or minute < end
        if inside:
            return "quiet_hours", f"{local:%H:%M} in {zone.key} is within quiet hours"
    return None


def _close(attempt: Attempt, status: AttemptStatus, now: float, error: str | None) -> Attempt:
    closed = attempt.copy()
    closed.status = status
    closed.finished_ts = now
    if error is not None:
        closed.error = error
    return closed


def _finish(
    delivery: Delivery,
    now: float,
    status: DeliveryStatus,
    decision: Decision,
    channel: str | None = None,
    keep: Attempt | None = None,
) -> Decision:
    for attempt in delivery.attempts:
        if attempt.status in OPEN_ATTEMPT and attempt is not keep:
            decision.updates.append(_close(attempt, AttemptStatus.ABANDONED, now, None))
    decision.action = Action.FINISH
    decision.status = status
    decision.channel = channel
    return decision


def _next_provider(step: Step, start: int, guard: Guard | None, now: float) -> str | None:
    for provider in step.providers[start:]:
        if guard is None or guard.available(provider, now):
            return provider
    return None


def decide(
    delivery: Delivery, now: float, providers: Mapping[str, Traits], guard: Guard | None = None
) -> Decision:
    """The next move for `delivery` at time `now`. Pure: reads, never writes."""
    steps = delivery.steps
    decision = Decision(Action.FINISH, delivery.step)
    for attempt in delivery.attempts:
        if meets(attempt, steps[attempt.step].wait_for):
            return _finish(
                delivery, now, DeliveryStatus.DELIVERED, decision, attempt.channel, attempt
            )
    if now >= delivery.expires_ts:
        return _finish(delivery, now, DeliveryStatus.EXPIRED, decision)

    index = delivery.step
    while index < len(steps):
        step = steps[index]
        decision.step = index
        last: Attempt | None = None
        for attempt in reversed(delivery.attempts):
            if attempt.step == index:
                last = attempt
                break
        if last is None:
            reason = skip_reason(step, delivery, now)
            if reason is None and guard is not None:
                reason = guard.brake(step, delivery, now)
            first = _next_provider(step, 0, guard, now) if reason is None else None
            if reason is None and first is None:
                reason = "circuit_open", f"every {step.channel} provider's circuit is open"
            if reason is not None:
                decision.skipped.append(
                    SkippedStep(
                        step=index, channel=step.channel, reason=reason[0], ts=now, detail=reason[1]
                    )
                )
                index += 1
                continue
            assert first is not None
            return decision.send(first)

        status = last.status
        if status is AttemptStatus.SENDING:
            if providers[last.provider].idempotent_sends:
                return decision.send(last.provider, resend=last)
            last = _close(
                last,
                AttemptStatus.UNKNOWN,
                now,
                "outcome unknown: the worker stopped during the request",
            )
            last.finished_ts = None
            last.deadline_ts = last.started_ts + step.timeout
            decision.updates.append(last)
            status = AttemptStatus.UNKNOWN

        if status in _WAITING:
            deadline = last.deadline_ts if last.deadline_ts is not None else now
            if now < deadline:
                wake = min(deadline, delivery.expires_ts)
                interval = providers[last.provider].poll_interval
                if interval and last.provider_message_id is not None:
                    due = now >= last.started_ts + interval
                    return decision.wait(min(wake, now + interval), last if due else None)
                return decision.wait(wake)
            decision.updates.append(
                _close(
                    last, AttemptStatus.TIMED_OUT, now, f"no {step.wait_for.value} receipt in time"
                )
            )
        elif status is AttemptStatus.TRANSIENT:
            tries = sum(
                1 for a in delivery.attempts if a.step == index and a.provider == last.provider
            )
            retry_ts = last.retry_ts if last.retry_ts is not None else now
            waited = retry_ts - (last.finished_ts or last.started_ts)
            if (
                tries < step.retry_attempts
                and waited <= step.timeout
                and retry_ts < delivery.expires_ts
                and (guard is None or guard.available(last.provider, now))
            ):
                if now >= retry_ts:
                    return decision.send(last.provider)
                return decision.wait(retry_ts)

        position = (
            step.providers.index(last.provider) + 1
            if last.provider in step.providers
            else len(step.providers)
        )
        following = _next_provider(step, position, guard, now)
        if following is not None:
            return decision.send(following)
        index += 1

    decision.step = len(steps)
    return _finish(delivery, now, DeliveryStatus.EXHAUSTED, decision)


class Engine:
    """Carries out decisions: provider calls and store writes, nothing else."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        clock: Clock,
        *,
        listeners: Sequence[Listener] = (),
        guard: Guard | None = None,
    ) -> None:
        self.store = store
        self.providers = providers
        self.clock = clock
        self.guard = guard
        self._listeners = listeners

    def _event(self, kind: str, delivery: Delivery, **fields: str | None) -> None:
        if self._listeners:
            emit(self._listeners, Event(kind, delivery.id, self.clock.now(), **fields))

    async def advance(self, claim: Claim) -> Delivery:
        """Run `claim`'s delivery until it must wait or is finished; return its state."""
        delivery = claim.delivery
        pending: Transition | None = None
        while True:
            now = self.clock.now()
            decision = decide(delivery, now, self.providers, self.guard)
            change = Transition(
                attempts=list(decision.updates), skipped=decision.skipped, step=decision.step
            )
            if decision.action is Action.SEND and self.guard is not None:
                assert decision.provider is not None
                delay = await self.guard.acquire(decision.provider, delivery, now)
                if delay > 0:  # rate-limited: queue, do not fail
                    decision.action = Action.WAIT
                    decision.wake_ts = now + delay
                    self._event("throttled", delivery, provider=decision.provider)
            if decision.action is Action.SEND:
                assert decision.provider is not None
                attempt = self._attempt(delivery, decision, now)
                change.attempts.append(attempt)
                change.wake_ts = now  # due again once the lease lapses, should we die mid-call
                change.release = False
            elif decision.action is Action.POLL:
                assert decision.attempt is not None
                polled = await self._poll(decision.attempt)
                if polled is not None:
                    change.attempts.append(polled)
                    change.wake_ts = now
                    change.release = False
                    pending = change if pending is None else pending.merge(change)
                    apply_transition(delivery, change, own=True)
                    continue
                change.wake_ts = decision.wake_ts
            elif decision.action is Action.WAIT:
                change.wake_ts = decision.wake_ts
            else:
                change.status = decision.status
                change.channel = decision.channel
                change.finished_ts = now
            # `pending` (a call's outcome, a poll's news) is already applied to `delivery`:
            # it is written together with this change, and only this change is applied now
            write = change if pending is None else pending.merge(change)
            pending = None
            await self.store.commit(claim, write)
            apply_transition(delivery, change, own=True)
            if self.guard is not None:
                for written in write.attempts:
                    if written.status is not AttemptStatus.SENDING:
                        self.guard.observe(written, now)
            self._report(delivery, decision)
            if decision.action is not Action.SEND:
                return delivery
            if self.clock.now() >= claim.lease_until:
                # paused past the lease while writing the intent: a successor may hold the
                # delivery now and sees the intent as an unknown outcome; sending as well
                # could send twice
                raise LeaseLost(
                    f"the lease on delivery {delivery.id} ran out before the call to "
                    f"{attempt.provider}; not sending"
                )
            outcome = await self._call(delivery, attempt)
            pending = Transition(attempts=[outcome], wake_ts=now, release=False)
            apply_transition(delivery, pending, own=True)
            self._outcome_event(delivery, outcome)

    def _outcome_event(self, delivery: Delivery, attempt: Attempt) -> None:
        self._event(
            "outcome",
            delivery,
            channel=attempt.channel,
            provider=attempt.provider,
            status=attempt.status.value,
            detail=attempt.error,
        )

    def _attempt(self, delivery: Delivery, decision: Decision, now: float) -> Attempt:
        if decision.resend is not None:
            again = decision.resend.copy()
            again.status = AttemptStatus.SENDING
            return again
        assert decision.provider is not None
        step = delivery.steps[decision.step]
        return Attempt(
            id=new_id(),
            delivery_id=delivery.id,
            step=decision.step,
            channel=step.channel,
            provider=decision.provider,
            status=AttemptStatus.SENDING,
            started_ts=now,
        )

    def _report(self, delivery: Delivery, decision: Decision) -> None:
        if not self._listeners:
            return
        for update in decision.updates:
            self._outcome_event(delivery, update)
        for skip in decision.skipped:
            self._event(
                "skipped", delivery, channel=skip.channel, status=skip.reason, detail=skip.detail
            )
        if decision.action is Action.SEND:
            step = delivery.steps[decision.step]
            self._event("sending", delivery, channel=step.channel, provider=decision.provider)
        elif decision.action is Action.FINISH:
            assert decision.status is not None
            self._event(
                "finished", delivery, channel=decision.channel, status=decision.status.value
            )

    async def _call(self, delivery: Delivery, attempt: Attempt) -> Attempt:
        """Call the provider and turn whatever happens into the attempt's outcome."""
        provider = self.providers[attempt.provider]
        step = delivery.steps[attempt.step]
        request = SendRequest(
            attempt_id=attempt.id,
            delivery_id=delivery.id,
            channel=attempt.channel,
            address=delivery.recipient.address(attempt.channel) or "",
            recipient=delivery.recipient,
            message=delivery.message,
        )
        outcome = attempt.copy()
        result = await send_classified(provider, request)
        if isinstance(result, ProviderError):
            now = self.clock.now()
            outcome.status = next(s for kind, s in _OUTCOMES if isinstance(result, kind))
            outcome.error = str(result.args[0]) if result.args else type(result).__name__
            outcome.code = result.code
            if isinstance(result, UnknownOutcomeError):
                outcome.deadline_ts = now + step.timeout  # wait for a receipt, do not resend
                return outcome
            outcome.finished_ts = now
            if isinstance(result, TransientError):
                tries = sum(
                    1
                    for a in delivery.attempts
                    if a.step == attempt.step and a.provider == attempt.provider
                )
                outcome.retry_ts = now + max(backoff(step, tries), result.retry_after or 0.0)
            return outcome
        now = self.clock.now()
        outcome.status = AttemptStatus.ACCEPTED
        outcome.provider_message_id = result.provider_message_id
        outcome.cost = result.cost
        outcome.deadline_ts = now + step.timeout
        return outcome

    async def _poll(self, attempt: Attempt) -> Attempt | None:
        """Ask a polling provider about `attempt`; the attempt with any news, else None."""
        provider = self.providers[attempt.provider]
        assert attempt.provider_message_id is not None
        try:
            receipts = await provider.poll([attempt.provider_message_id])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning(
                "polling %s for receipts failed; will try again", provider.name, exc_info=True
            )
            return None
        updated = attempt.copy()
        fresh = [
            r
            for r in receipts
            if r.provider_message_id == attempt.provider_message_id and updated.absorb(r)
        ]
        return updated if fresh else None


__all__ = ["Action", "Decision", "Engine", "Guard", "decide", "meets", "skip_reason"]
