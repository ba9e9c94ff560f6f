"""The cascade's state machine.

`decide()` is a pure function: given a delivery as stored and the time, it returns the
`Transition` to write and at most one action, `Send` or `Poll`, each carrying only its
own data (as tenacity's `iter` returns typed actions). `Engine.advance()` is the thin
driver that carries a decision out: one store write per transition, the provider call
between two of them.

A provider call is bracketed by two writes: the attempt is recorded as `sending`
before the request, and its outcome after. A crash between the two leaves `sending`
behind; the next worker reads that as an unknown outcome and does not resend (unless
the provider declares idempotent sends, then it resends with the same attempt id).

Before a delivery finishes, the messages it made stale are withdrawn, bracketed the
same way (`withdrawal.py`: which ones, and the calls).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from cascade_notify import _logmask
from cascade_notify._logfields import attempt_fields, log_transition
from cascade_notify.clock import Clock
from cascade_notify.errors import (
    LeaseLost,
    MessageError,
    PermanentError,
    ProviderError,
    UnreachableError,
)
from cascade_notify.events import Event, Listener, emit, outbox_events, transition_events
from cascade_notify.models import (
    OPEN_ATTEMPT,
    Attempt,
    AttemptStatus,
    Delivery,
    DeliveryStatus,
    Signal,
    SignalKind,
    SkippedStep,
    Step,
    WaitFor,
    new_id,
)
from cascade_notify.outcomes import bill, outcome
from cascade_notify.providers.base import Provider, SendResult, request_for, send_parts
from cascade_notify.resilience import Guard
from cascade_notify.rules import (
    Defer,
    Skip,
    applies,
    fit,
    skip_reason,
    step_limit,
    step_text,
    too_long,
)
from cascade_notify.stores.base import Claim, Store, Transition, apply_transition
from cascade_notify.withdrawal import (
    WITHDRAWAL,
    Withdraw,
    WithdrawTraits,
    carry_out,
    intend,
    superseded,
)

log = _logmask.logger("cascade_notify.engine")

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
#: Codes of transient errors that mean the provider could not be reached at all: the
#: connection was refused or never made (`connect`, as the HTTP base and the fake's
#: `down` report it). Within a step listing several providers, the next one is tried
#: at once.
PROVIDER_DOWN = frozenset({"connect"})
#: A claim this close to its lease's end is not used for a send: the intent could be
#: written, and the lease be gone before the call. It is left for the next claim.
LEASE_MARGIN = 0.25
#: A delivery waiting on a polled attempt comes due in the store every this many poll
#: intervals: the poller asks in between, and this is its safety net (a restart, a dead
#: worker's attempts picked up by another).
REARM_INTERVALS = 5


class LeaseRanOut(LeaseLost):
    """The claim's lease ended before the call could be made; nobody took it over (yet)."""


class Traits(WithdrawTraits, Protocol):
    """What `decide()` reads of a provider: its declared capabilities, no I/O."""

    @property
    def idempotent_sends(self) -> bool: ...

    @property
    def poll_interval(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Send:
    """Call the attempt's provider. `attempt` is the intent (`sending`) in the transition;
    `resend` says it repeats an attempt whose outcome was unknown, with the same id."""

    attempt: Attempt
    resend: bool = False


@dataclass(frozen=True, slots=True)
class Poll:
    """Ask the attempt's provider about it (the poller does, outside the lease)."""

    attempt: Attempt


class Decision(NamedTuple):
    """What to write, and the one thing to do after writing it (None: nothing)."""

    transition: Transition
    action: Send | Poll | Withdraw | None = None


def meets(attempt: Attempt, wait_for: WaitFor) -> bool:
    return attempt.status in _MEETS[wait_for]


def tries(delivery: Delivery, step: int, provider: str) -> int:
    """How many attempts this delivery made on `provider` in `step`: the retry count."""
    return sum(1 for a in delivery.attempts if a.step == step and a.provider == provider)


def _close(attempt: Attempt, status: AttemptStatus, now: float, error: str | None) -> Attempt:
    closed = attempt.copy()
    closed.status = status
    closed.finished_ts = now
    if error is not None:
        closed.error = error
    return closed


def _finish(
    delivery: Delivery,
    change: Transition,
    now: float,
    status: DeliveryStatus,
    channel: str | None = None,
    keep: Attempt | None = None,
) -> Decision:
    # an attempt this transition already closed (timed out at its deadline) keeps that
    # outcome and its reason: only those still open end abandoned
    closed = {a.id for a in change.attempts if a.status not in OPEN_ATTEMPT}
    for attempt in delivery.attempts:
        if attempt.status in OPEN_ATTEMPT and attempt is not keep and attempt.id not in closed:
            change.attempts.append(_close(attempt, AttemptStatus.ABANDONED, now, None))
    change.status, change.channel, change.finished_ts, change.wake_ts = status, channel, now, None
    return Decision(change)


def _next_provider(
    step: Step, start: int, guard: Guard | None, now: float, holder: str
) -> str | None:
    for provider in step.providers[start:]:
        if guard is None or guard.available(provider, now, holder):
            return provider
    return None


def _fails_over(step: Step, last: Attempt, guard: Guard | None, now: float, holder: str) -> bool:
    """Whether a transient failure moves to the step's next provider at once instead of
    retrying this one: the provider could not be reached at all (nothing was sent) and
    another one of the step is available (two SMS gateways)."""
    if last.code not in PROVIDER_DOWN or last.provider not in step.providers:
        return False
    position = step.providers.index(last.provider) + 1
    return _next_provider(step, position, guard, now, holder) is not None


def _send(
    delivery: Delivery,
    change: Transition,
    index: int,
    provider: str,
    now: float,
    ids: Callable[[], str],
) -> Decision:
    step = delivery.steps[index]
    intent = Attempt(
        id=ids(),
        delivery_id=delivery.id,
        step=index,
        channel=step.channel,
        provider=provider,
        status=AttemptStatus.SENDING,
        started_ts=now,
    )
    return _intent(change, intent, now, resend=False)


def _intent(change: Transition, intent: Attempt, now: float, *, resend: bool) -> Decision:
    change.attempts.append(intent)
    change.wake_ts = now  # due again once the lease lapses, should we die mid-call
    change.release = False
    return Decision(change, Send(intent, resend))


def _wait(change: Transition, until: float, poll: Attempt | None = None) -> Decision:
    change.wake_ts = until
    return Decision(change, None if poll is None else Poll(poll))


def decide(
    delivery: Delivery,
    now: float,
    providers: Mapping[str, Traits],
    guard: Guard | None = None,
    *,
    ids: Callable[[], str] = new_id,
) -> Decision:
    """The next move for `delivery` at time `now`. Pure: reads, never writes
    (`ids` makes the id of a new attempt)."""
    steps = delivery.steps
    change = Transition(step=delivery.step)
    for attempt in delivery.attempts:
        if meets(attempt, steps[attempt.step].wait_for):
            stale = superseded(delivery, attempt, providers)
            if stale:
                return Decision(change, intend(change, stale, attempt, now, "delivered_elsewhere"))
            return _finish(
                delivery, change, now, DeliveryStatus.DELIVERED, attempt.channel, attempt
            )
    if now >= delivery.expires_ts:
        return _end(delivery, change, now, DeliveryStatus.EXPIRED, providers)

    index = delivery.step
    while index < len(steps):
        step = steps[index]
        change.step = index
        last = next((a for a in reversed(delivery.attempts) if a.step == index), None)
        if last is None:
            rule = applies(step, delivery, now, guard)
            if rule is None:
                limit = step_limit(step, (providers[n] for n in step.providers if n in providers))
                rule = too_long(step, delivery.message, limit)
            first = _next_provider(step, 0, guard, now, delivery.id) if rule is None else None
            if rule is None and first is None:
                rule = Skip("circuit_open", f"every {step.channel} provider's circuit is open")
            if isinstance(rule, Defer):
                return _wait(change, rule.until)
            if isinstance(rule, Skip):
                change.skipped.append(
                    SkippedStep(
                        step=index, channel=step.channel, reason=rule.reason, ts=now,
                        detail=rule.detail,
                    )
                )  # fmt: skip
                index += 1
                continue
            assert first is not None
            return _send(delivery, change, index, first, now, ids)

        status = last.status
        if status is AttemptStatus.SENDING:
            if providers[last.provider].idempotent_sends:
                again = last.copy()
                return _intent(change, again, now, resend=True)
            lost = "outcome unknown: the worker stopped during the request"
            last = _close(last, AttemptStatus.UNKNOWN, now, lost)
            last.finished_ts = None
            last.deadline_ts = last.started_ts + step.timeout
            change.attempts.append(last)
            status = AttemptStatus.UNKNOWN

        if status in _WAITING:
            deadline = last.deadline_ts if last.deadline_ts is not None else now
            if now < deadline:
                wake = min(deadline, delivery.expires_ts)
                interval = providers[last.provider].poll_interval
                if interval and last.provider_message_id is not None:
                    # a receipt just heard (by a poll or a webhook) answers for a while
                    heard = max((r.ts for r in last.receipts), default=last.started_ts)
                    heard = max(heard, last.started_ts)
                    if now < heard + interval:
                        return _wait(change, min(wake, heard + interval))
                    # the poller asks every interval from here; the timer is its safety net
                    return _wait(change, min(wake, now + REARM_INTERVALS * interval), last)
                return _wait(change, wake)
            change.attempts.append(
                _close(
                    last, AttemptStatus.TIMED_OUT, now, f"no {step.wait_for.value} receipt in time"
                )
            )
        elif status is AttemptStatus.TRANSIENT:
            retry_ts = last.retry_ts if last.retry_ts is not None else now
            waited = retry_ts - (last.finished_ts or last.started_ts)
            if (
                not _fails_over(step, last, guard, now, delivery.id)
                and tries(delivery, index, last.provider) < step.retry_attempts
                and waited <= step.timeout
                and retry_ts < delivery.expires_ts
                and (guard is None or guard.available(last.provider, now, delivery.id))
            ):
                if now >= retry_ts:
                    return _send(delivery, change, index, last.provider, now, ids)
                return _wait(change, retry_ts)

        position = (
            step.providers.index(last.provider) + 1
            if last.provider in step.providers
            else len(step.providers)
        )
        following = _next_provider(step, position, guard, now, delivery.id)
        if following is not None:
            return _send(delivery, change, index, following, now, ids)
        index += 1

    change.step = len(steps)
    return _end(delivery, change, now, DeliveryStatus.EXHAUSTED, providers)


def _end(
    delivery: Delivery,
    change: Transition,
    now: float,
    status: DeliveryStatus,
    providers: Mapping[str, Traits],
) -> Decision:
    """Finish without a success, once what is always withdrawn (a call task) is."""
    stale = superseded(delivery, None, providers)
    if stale:
        return Decision(change, intend(change, stale, None, now, "expired"))
    return _finish(delivery, change, now, status)


SignalSink = Callable[[Sequence[Signal]], Awaitable[None]]


def _callee(action: Send | Withdraw) -> str:
    attempts = action.attempts if isinstance(action, Withdraw) else (action.attempt,)
    return ", ".join(sorted({a.provider for a in attempts}))


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
        poll: Callable[[Attempt], None] | None = None,
        signals: SignalSink | None = None,
        events: frozenset[str] = frozenset(),
        wrote_events: Callable[[], None] | None = None,
    ) -> None:
        """`events`: the kinds of outcome webhook each write adds to the store's outbox;
        `wrote_events` is called after a write that added some."""
        self.store = store
        self.providers = providers
        self.clock = clock
        self.guard = guard
        self._listeners = listeners
        self._poll = poll
        self._signals = signals
        self._events = events
        self._wrote_events = wrote_events

    async def advance(
        self, claim: Claim, *, calls_done: Callable[[], None] | None = None
    ) -> Delivery:
        """Run `claim`'s delivery until it must wait or is finished; return its state.

        `calls_done` is called once no provider call is left to make, before the last
        write is committed: a worker can claim the next delivery while this one's outcome
        is on its way to disk, and the two writes share a commit.
        """
        delivery = claim.delivery
        pending: Transition | None = None  # a call's outcome, already applied to `delivery`
        while True:
            now = self.clock.now()
            change, action = decide(delivery, now, self.providers, self.guard)
            if isinstance(action, Send):
                action = await self._permit(delivery, change, action, claim, now)
            write = change if pending is None else pending.merge(change)
            pending = None
            if not isinstance(action, Send | Withdraw) and calls_done is not None:
                calls_done()
            if self._events:
                write.events = outbox_events(delivery.id, write, now, self._events)
            await self.store.commit(claim, write)
            if write.events and self._wrote_events is not None:
                self._wrote_events()
            apply_transition(delivery, change, own=True)
            log_transition(log, delivery.id, write)
            if self.guard is not None:
                for written in write.attempts:
                    if written.status is not AttemptStatus.SENDING and (
                        written.status not in WITHDRAWAL
                    ):
                        self.guard.observe(written, now)
            if self._listeners:
                for event in transition_events(delivery.id, write, now, delivery.created_ts):
                    emit(self._listeners, event)
            if isinstance(action, Poll) and self._poll is not None:
                self._poll(action.attempt)
            if not isinstance(action, Send | Withdraw):
                return delivery
            if self.clock.now() >= claim.lease_until:
                # paused past the lease while writing the intent: a successor may hold the
                # delivery now and sees the intent as an unknown outcome; sending as well
                # could send twice
                raise LeaseRanOut(
                    f"the lease on delivery {delivery.id} ran out before the call to "
                    f"{_callee(action)}; not calling"
                )
            if isinstance(action, Withdraw):
                outcomes = await carry_out(self.providers, self.clock, delivery, action)
            else:
                outcomes = [await self._call(delivery, action)]
            pending = Transition(attempts=outcomes, wake_ts=now, release=False)
            apply_transition(delivery, pending, own=True)

    async def _permit(
        self, delivery: Delivery, change: Transition, action: Send, claim: Claim, now: float
    ) -> Send | None:
        """The send if it may go now; else None, with `change` turned into a wait."""
        delay = 0.0
        if now >= claim.lease_until - LEASE_MARGIN:
            delay = LEASE_MARGIN  # too little lease left to write the intent and call
        elif self.guard is not None:
            delay = await self.guard.acquire(action.attempt.provider, delivery, now)
            if delay > 0 and self._listeners:  # rate-limited: queue, do not fail
                emit(
                    self._listeners,
                    Event("throttled", delivery.id, now, provider=action.attempt.provider),
                )
        if delay <= 0:
            return action
        change.attempts.remove(action.attempt)
        change.wake_ts, change.release = now + delay, True
        return None

    async def _call(self, delivery: Delivery, action: Send) -> Attempt:
        """Call the provider and turn whatever happens into the attempt's outcome."""
        attempt, step = action.attempt, delivery.steps[action.attempt.step]
        provider = self.providers[attempt.provider]
        # a message is stale once the step gives up on it, or the delivery's TTL passes
        deadline = min(self.clock.now() + step.timeout, delivery.expires_ts)
        parts: list[str] = []
        try:
            request = request_for(provider, delivery, attempt, deadline, resend=action.resend)
        except MessageError as exc:  # checked at send(); a policy changed since may refuse
            result: SendResult | ProviderError = PermanentError(
                str(exc), provider=provider.name, code="overrides"
            )
        else:
            limit = step_limit(step, (self.providers[n] for n in step.providers))
            parts = fit(step, step_text(step, delivery.message, request.text), limit)
            result = await send_parts(provider, request, parts)
        now = self.clock.now()
        if isinstance(result, ProviderError) and self.guard is not None:
            self.guard.refused(provider.name, result, now)
        if isinstance(result, UnreachableError) and result.gone and self._signals is not None:
            gone = Signal(
                kind=SignalKind.GONE, channel=attempt.channel, address=request.address,
                provider=provider.name, reason=result.gone, ts=now,
                recipient_id=delivery.recipient.id,
            )  # fmt: skip
            try:
                await self._signals([gone])
            except Exception:  # the outcome must be written whatever became of the signal
                log.warning(
                    "an address signal of %s was lost", provider.name, exc_info=True,
                    extra=attempt_fields(attempt),
                )  # fmt: skip
        done = outcome(attempt, result, step, tries(delivery, attempt.step, attempt.provider), now)
        if isinstance(result, SendResult):
            bill(done, provider.settings, parts)
        return done


__all__ = [
    "PROVIDER_DOWN",
    "Decision",
    "Engine",
    "LeaseRanOut",
    "Poll",
    "Send",
    "Withdraw",
    "decide",
    "meets",
    "skip_reason",
    "superseded",
    "tries",
]
