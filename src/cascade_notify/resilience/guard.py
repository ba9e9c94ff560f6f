"""Surviving outages: retries, and the `Guard` the engine consults.

Retries are timers in the store, not sleeps in a process, so they survive a
restart; tenacity supplies the backoff strategy. A `Guard` holds circuit
breakers, rate limits and brakes; the engine asks it before each step and
send, and tells it every outcome.

`Protection` is the Guard a `Notifier` builds from its policy file:

- a circuit breaker per provider (`_circuit.Circuit`). Failures are transient
  errors, unknown outcomes and missing receipts (`timed_out` with no delivery
  seen); successes are `delivered`/`read` receipts, or `accepted` for a
  provider that can report nothing more; an unreachable recipient or a
  rejected message is neither. While it is open the engine skips the provider;
- token-bucket rate limits per provider, overall and per address: a send over
  the limit reserves the next free slot and waits for it;
- brakes on sms and call steps: sends per number and per number prefix an
  hour, allowed countries, and money spent an hour; a tripped brake skips the
  step and is repeated as an event of kind `brake`.

Its answers to the engine are reads of state held here. When the store
implements `SharedState`, breaker transitions, rate-limit slots and brake
counts go through it, so every worker on that store shares them; otherwise
they live in this process.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Final, Protocol, cast

from tenacity import RetryCallState, wait_exponential_jitter

from cascade_notify import _logmask
from cascade_notify._duration import parse_duration
from cascade_notify.clock import Clock
from cascade_notify.errors import CascadeError, PermanentError, ProviderError
from cascade_notify.events import Event
from cascade_notify.models import (
    Attempt,
    AttemptStatus,
    Delivery,
    Receipt,
    ReceiptStatus,
    Step,
    WaitFor,
)
from cascade_notify.resilience.circuit import BreakerInfo, Circuit
from cascade_notify.resilience.limits import BRAKED, HOUR, Brakes, TokenBucket
from cascade_notify.resilience.settings import (
    BrakeSettings,
    BreakerSettings,
    RateLimitSettings,
    RetrySettings,
)
from cascade_notify.resilience.shared import SharedState, SharedTable

if TYPE_CHECKING:
    from cascade_notify.policy import Config

log = _logmask.logger("cascade_notify.resilience")

#: Skip reasons a brake gives; each skip is repeated as an event of kind `brake`.
BRAKE_REASONS: Final = frozenset({"brake_country", "brake_recipient", "brake_prefix", "brake_cost"})
#: How often a worker reads the breakers other workers share (seconds of its clock).
SYNC_INTERVAL: Final = 1.0
# A send the guard let through in decide() but refuses in acquire() (another worker moved a
# shared count meanwhile, or every half-open probe slot is taken) waits this long before the
# engine decides again: long enough that a waiting delivery is not rewritten in a hot loop.
_RECHECK: Final = 1.0
_FAILED: Final = frozenset(
    {AttemptStatus.TRANSIENT, AttemptStatus.UNKNOWN, AttemptStatus.TIMED_OUT}
)
_ANSWERED: Final = frozenset({AttemptStatus.UNREACHABLE, AttemptStatus.FAILED})
_REACHED: Final = frozenset({ReceiptStatus.DELIVERED, ReceiptStatus.READ})
_REMEMBER: Final = 100_000  # unknown outcomes remembered, so their time-out is not counted twice
_BREAKER_TTL: Final = 30 * 86400.0
_RATE_TTL: Final = 86400.0  # a queue of reserved slots longer than a day is not a rate limit


class _AttemptNumber:
    """The one field of tenacity's RetryCallState its wait strategies read."""

    def __init__(self, number: int) -> None:
        self.attempt_number = number


# tenacity 9.2 renamed wait_exponential_jitter's `initial` to `multiplier` (the old name
# warns); the oldest tenacity we support has only `initial`
_SCALE: Final = (
    "multiplier" if "multiplier" in inspect.signature(wait_exponential_jitter).parameters
    else "initial"
)  # fmt: skip


def backoff(step: Step, tries: int) -> float:
    """Exponential backoff with jitter before retry number `tries` (tenacity's strategy)."""
    scale: dict[str, float] = {_SCALE: step.retry_initial}
    wait = wait_exponential_jitter(max=step.retry_max, **scale)
    return float(wait(cast(RetryCallState, _AttemptNumber(tries))))


class Guard(Protocol):
    """Outage and cost protection the engine consults (circuit breakers, rate limits,
    brakes against SMS pumping). Its answers are reads of its current state, so
    `decide()` stays a function of (delivery, time, guard state)."""

    def available(self, provider: str, now: float, holder: str | None = None) -> bool:
        """False while `provider`'s circuit is open (outage), or half-open with every probe
        slot taken by others: do not send there now. `holder`: the delivery asking, so a
        delivery that holds a probe slot hears the answer `acquire` will give it."""
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

    def refused(self, provider: str, error: ProviderError, now: float) -> None:
        """Learn from a provider's error what its attempt does not carry: a permanent
        error about the account (bad token, suspended, no balance) opens its breaker."""
        ...


class Protection:
    """The `Guard` a Notifier uses: breakers, rate limits and brakes from its policy file."""

    def __init__(self, config: Config, clock: Clock) -> None:
        self.clock = clock
        providers = config.providers.items()
        self._circuits = {name: Circuit(name, cfg.breaker) for name, cfg in providers}
        self._channel = {name: cfg.channel for name, cfg in providers}
        self._accept_only = frozenset(
            name
            for name, cfg in providers
            if not cfg.cls.can_satisfy(WaitFor.DELIVERED, cfg.settings)
        )
        self._buckets = {
            name: _buckets(cfg.rate_limit) for name, cfg in providers if cfg.rate_limit
        }
        self._brakes = {n: Brakes(n, p.brakes) for n, p in config.policies.items()}
        self._table = SharedTable()
        self._shared: SharedState = self._table
        self._sharing = False
        self._counts: dict[str, float] = {}  # brake counts as last heard; the hour is in the key
        self._hour = -1
        self._held: dict[tuple[str, str], float] = {}  # (bucket, delivery id) -> reserved slot
        self._unknown: OrderedDict[str, None] = OrderedDict()
        self._spenders: dict[str, str] = {}  # delivery id -> policy whose budget its send uses
        self._owed: list[tuple[str, float]] = []  # cost not yet added to the shared counts
        self._next_pull = 0.0
        # one sync at a time: a send must not go out on local state while a pull that
        # may say "open" is still on its way
        self._sync_lock = asyncio.Lock()
        self._emit: Callable[[Event], None] | None = None
        self.breakers = Breakers(self)

    @property
    def sharing(self) -> bool:
        """Whether state goes through the store (it implements `SharedState`)."""
        return self._sharing

    def attach(self, store: object, emit: Callable[[Event], None] | None = None) -> None:
        """Share state through `store` if it can; send `breaker` and `brake` events to `emit`."""
        self._emit = emit
        if isinstance(store, SharedState):
            self._shared, self._sharing = store, True
            self._next_pull = 0.0

    async def flush(self, now: float) -> None:
        """Share whatever changed here and was not shared yet (the notifier stops)."""
        if self._sharing and (self._owed or self._dirty()):
            try:
                await self._sync(now)
            except CascadeError:
                log.warning(
                    "could not share breaker state on stop; other workers learn "
                    "of it by their own failures",
                    exc_info=True,
                )

    def detach(self) -> None:
        self._shared, self._sharing, self._emit = self._table, False, None

    # the Guard

    def available(self, provider: str, now: float, holder: str | None = None) -> bool:
        circuit = self._circuits.get(provider)
        return circuit is None or circuit.allows(now, holder)

    def brake(self, step: Step, delivery: Delivery, now: float) -> tuple[str, str] | None:
        if step.channel not in BRAKED:
            return None
        rules = self._brakes.get(delivery.policy)
        number = delivery.recipient.address(step.channel)
        if rules is None or not rules.active or number is None:
            return None
        refused = rules.country(step.channel, number)
        if refused is not None:
            return refused
        self._roll(now)
        for count in rules.counts(step.channel, number, now):
            if self._counts.get(count.key, 0.0) >= count.limit:
                return count.reason, f"{count.limit:g} {count.what} this hour, the limit"
        budget = rules.cost(now)
        if budget is not None and (spent := self._counts.get(budget.key, 0.0)) >= budget.limit:
            return budget.reason, f"{spent:g} {budget.what} this hour; budget {budget.limit:g}"
        return None

    async def acquire(self, provider: str, delivery: Delivery, now: float) -> float:
        if self._sharing and (
            self._sync_lock.locked() or self._owed or self._dirty() or now >= self._next_pull
        ):
            async with self._sync_lock:
                if self._owed or self._dirty() or now >= self._next_pull:
                    await self._sync(now)
        circuit = self._circuits.get(provider)
        if circuit is not None and not circuit.allows(now, delivery.id):
            return _RECHECK
        buckets = self._buckets.get(provider)
        if buckets is not None:
            wait = await self._pace(provider, buckets, delivery, now)
            if wait > 0:
                return wait
        # the probe slot before the brake counts: a send the breaker then refuses must not
        # be counted against the recipient's hourly limit
        if circuit is not None:
            lapse = next((s.timeout for s in delivery.steps if provider in s.providers), 600.0)
            if not circuit.take_probe(now, delivery.id, now + lapse):
                return _RECHECK
        channel = self._channel.get(provider, "")
        if channel in BRAKED and not await self._count_send(channel, delivery, now):
            if circuit is not None:
                circuit.release(delivery.id)  # no send after all: its probe slot goes back
            return _RECHECK
        return 0.0

    def observe(self, attempt: Attempt, now: float) -> None:
        status = attempt.status
        if attempt.channel in BRAKED and status is not AttemptStatus.SENDING:
            self._spend(attempt, now)
        circuit = self._circuits.get(attempt.provider)
        if circuit is None:
            return
        holder = attempt.delivery_id
        if status in _FAILED:
            if status is AttemptStatus.TIMED_OUT:
                if any(r.status in _REACHED for r in attempt.receipts):
                    circuit.neutral(now, holder)  # delivered, just not read: the provider works
                    return
                if attempt.id in self._unknown:
                    del self._unknown[attempt.id]
                    return  # counted once already, when its outcome was lost
            elif status is AttemptStatus.UNKNOWN:
                self._unknown[attempt.id] = None
                if len(self._unknown) > _REMEMBER:
                    self._unknown.popitem(last=False)
            self._report(circuit, circuit.failure(now, attempt.started_ts, holder), now)
        elif status in _ANSWERED:
            circuit.neutral(now, holder)
        elif status is AttemptStatus.ACCEPTED:
            if attempt.provider in self._accept_only:
                self._report(circuit, circuit.success(now), now)
        elif status in (AttemptStatus.DELIVERED, AttemptStatus.READ):
            self._report(circuit, circuit.success(now), now)
        elif status is AttemptStatus.ABANDONED:
            circuit.release(holder)

    def refused(self, provider: str, error: ProviderError, now: float) -> None:
        if not (isinstance(error, PermanentError) and error.account):
            return
        circuit = self._circuits.get(provider)
        if circuit is not None:
            self._report(circuit, circuit.trip(now, f"the account was refused: {error}"), now)

    def heard(self, receipt: Receipt) -> None:
        """Learn from a receipt the notifier took in (not a duplicate)."""
        circuit = self._circuits.get(receipt.provider)
        if circuit is None:
            return
        now = self.clock.now()
        if receipt.status in _REACHED:
            self._report(circuit, circuit.success(now), now)
        elif receipt.status is ReceiptStatus.FAILED:
            circuit.neutral(now)

    def relay(self, event: Event) -> None:
        """An event listener: repeat each step a brake skipped as an event of kind `brake`."""
        if event.kind == "skipped" and event.status in BRAKE_REASONS and self._emit is not None:
            self._emit(replace(event, kind="brake"))

    # rate limits and brakes

    async def _pace(
        self,
        provider: str,
        buckets: tuple[TokenBucket | None, TokenBucket | None],
        delivery: Delivery,
        now: float,
    ) -> float:
        overall, per_address = buckets
        address = delivery.recipient.address(self._channel[provider]) or delivery.recipient.id
        plan = [(f"rate:{provider}:to:{address}", per_address), (f"rate:{provider}", overall)]
        for key, bucket in plan:
            if bucket is None:
                continue
            held = self._held.get((key, delivery.id))
            if held is None:
                tat = await self._shared.shared_bump(
                    key, bucket.interval, floor=now, now=now, ttl=_RATE_TTL
                )
                held = self._held[(key, delivery.id)] = bucket.slot(tat, now)
                if held > now and bucket is overall and per_address is not None:
                    # the address's next send must not go before this one, now later
                    await self._shared.shared_bump(
                        plan[0][0], 0.0, floor=held + per_address.interval, now=now, ttl=_RATE_TTL
                    )
            if held > now:
                self._tidy(now)
                return held - now
        for key, _ in plan:
            self._held.pop((key, delivery.id), None)
        return 0.0

    def _tidy(self, now: float) -> None:
        if len(self._held) > 100_000:
            self._held = {k: t for k, t in self._held.items() if t > now - HOUR}

    async def _count_send(self, channel: str, delivery: Delivery, now: float) -> bool:
        """Count a send against the brakes; False (and nothing counted) if one trips."""
        rules = self._brakes.get(delivery.policy)
        number = delivery.recipient.address(channel)
        if rules is None or not rules.active or number is None:
            return True
        counts = rules.counts(channel, number, now)
        totals = [await self._bump(count.key, 1.0, now) for count in counts]
        if any(total > count.limit for total, count in zip(totals, counts, strict=True)):
            for count in counts:
                await self._bump(count.key, -1.0, now)
            return False
        if rules.cost(now) is not None:
            self._spenders[delivery.id] = delivery.policy
        return True

    async def _bump(self, key: str, amount: float, now: float) -> float:
        total = await self._shared.shared_bump(key, amount, floor=0.0, now=now, ttl=2 * HOUR)
        self._roll(now)
        self._counts[key] = total
        return total

    def _spend(self, attempt: Attempt, now: float) -> None:
        policy = self._spenders.pop(attempt.delivery_id, None)
        rules = self._brakes.get(policy) if policy is not None else None
        budget = rules.cost(now) if rules is not None else None
        if budget is None or not attempt.cost:
            return
        self._roll(now)
        if self._sharing:
            self._counts[budget.key] = self._counts.get(budget.key, 0.0) + attempt.cost
            self._owed.append((budget.key, attempt.cost))
        else:
            total = self._table.bump(budget.key, attempt.cost, floor=0.0, now=now, ttl=2 * HOUR)
            self._counts[budget.key] = total

    def _roll(self, now: float) -> None:
        hour = int(now // HOUR)
        if hour != self._hour:
            self._counts.clear()
            self._hour = hour

    # breakers: reporting and sharing

    def _report(
        self, circuit: Circuit, changed: bool, now: float, level: int = logging.WARNING
    ) -> None:
        """Log and emit a breaker's change: a warning when this process's sends moved it;
        `logging.INFO` for a change by hand, or one learnt from the store (the process
        that made it warned; a command that only reads it, `breaker list`, says nothing)."""
        if not changed:
            return
        info = circuit.info(now)
        log.log(level, "circuit breaker of %s is %s: %s", info.provider, info.state, info.reason)
        if self._emit is not None:
            self._emit(
                Event(
                    "breaker",
                    "",
                    now,
                    provider=info.provider,
                    status=info.state,
                    detail=info.reason,
                )
            )

    def _dirty(self) -> bool:
        return any(c.changed for c in self._circuits.values())

    async def _sync(self, now: float, *, pull: bool = False) -> None:
        """Share what changed here, and every so often read what changed elsewhere."""
        owed, self._owed = self._owed, []
        for key, amount in owed:
            await self._bump(key, amount, now)
        for circuit in self._circuits.values():
            if circuit.changed:
                await self._publish(circuit, now)
        if pull or now >= self._next_pull:
            self._next_pull = now + SYNC_INTERVAL
            await self._pull(now)

    async def _publish(self, circuit: Circuit, now: float) -> bool:
        text = json.dumps(circuit.snapshot())
        version = await self._shared.shared_put(
            f"breaker:{circuit.provider}", text, version=circuit.version, now=now, ttl=_BREAKER_TTL
        )
        if version is None:  # another worker moved it first: theirs stands
            circuit.changed = False
            await self._pull(now)
            return False
        circuit.version, circuit.changed = version, False
        return True

    async def _pull(self, now: float) -> None:
        shared = await self._shared.shared_get("breaker:", now)
        for key, (version, text) in shared.items():
            circuit = self._circuits.get(key.removeprefix("breaker:"))
            if circuit is not None and version != circuit.version and not circuit.changed:
                changed = circuit.adopt(json.loads(text), version)
                self._report(circuit, changed, now, logging.INFO)

    async def _manual(self, provider: str, change: Callable[[Circuit, float], None]) -> BreakerInfo:
        circuit = self._circuits.get(provider)
        if circuit is None:
            known = ", ".join(sorted(self._circuits)) or "none"
            raise CascadeError(f"no provider named {provider!r} (providers: {known})")
        for _ in range(5):  # a worker may move the shared state between our read and write
            now = self.clock.now()
            if self._sharing:
                await self._pull(now)
            change(circuit, now)
            if not self._sharing or await self._publish(circuit, now):
                break
        self._report(circuit, True, self.clock.now(), logging.INFO)
        return circuit.info(self.clock.now())


class Breakers:
    """Operators' hands on the circuit breakers: `notifier.breakers`.

    With a store that implements `SharedState` a change reaches every worker on
    it within `SYNC_INTERVAL`; with any other store (the memory store of
    another process, for one) it holds in this process only.
    """

    def __init__(self, guard: Protection) -> None:
        self._guard = guard

    @property
    def shared(self) -> bool:
        """Whether changes go through the store to the other notifiers on it."""
        return self._guard.sharing

    async def list(self) -> list[BreakerInfo]:
        """Every provider's breaker, as the notifiers on the store see it."""
        guard = self._guard
        now = guard.clock.now()
        if guard.sharing:
            await guard._sync(now, pull=True)
        return [c.info(now) for _, c in sorted(guard._circuits.items())]

    async def open(
        self, provider: str, duration: float | str, *, reason: str | None = None
    ) -> BreakerInfo:
        """Open `provider`'s breaker for `duration` (seconds, or e.g. "2h"); then it probes."""
        seconds = parse_duration(duration)
        why = reason or "opened by hand"
        return await self._guard._manual(
            provider, lambda circuit, now: circuit.force_open(now, seconds, why)
        )

    async def close(self, provider: str, *, reason: str | None = None) -> BreakerInfo:
        """Close `provider`'s breaker now: sends go to it again."""
        why = reason or "closed by hand"
        return await self._guard._manual(
            provider, lambda circuit, now: circuit.force_close(now, why)
        )


def _buckets(limits: RateLimitSettings) -> tuple[TokenBucket | None, TokenBucket | None]:
    overall, each = limits.per_second, limits.per_recipient_per_second
    return (
        None if overall is None else TokenBucket(overall, limits.burst),
        None if each is None else TokenBucket(each, limits.burst),
    )


__all__ = [
    "BRAKE_REASONS",
    "BrakeSettings",
    "BreakerInfo",
    "BreakerSettings",
    "Breakers",
    "Guard",
    "Protection",
    "RateLimitSettings",
    "RetrySettings",
    "SharedState",
    "backoff",
]
