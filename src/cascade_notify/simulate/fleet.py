"""The simulated world: who gets a message when, what each recipient's channels do, and
the providers standing in for the policy's, built on the library's `FakeProvider`."""

from __future__ import annotations

import asyncio
import bisect
import copy
import itertools
import random
from dataclasses import dataclass

from cascade_notify.clock import Clock
from cascade_notify.models import Receipt, ReceiptStatus, Recipient
from cascade_notify.models.channels import CHANNEL_KINDS, AddressKind
from cascade_notify.providers.base import Provider, SendRequest, SendResult
from cascade_notify.providers.fake import Behavior, FakeProvider, FakeSettings
from cascade_notify.simulate.scenario import READ_RECEIPTS, Outage, Scenario, _Channel, _Segment

_DEFAULT_CHANNEL = _Channel()


@dataclass(frozen=True, slots=True)
class Arrival:
    """One delivery of the traffic: when it is sent, to whom, and how each of the
    recipient's channels will answer (drawn up front, so the draws do not depend on
    the order the engine happens to call providers in)."""

    ts: float
    recipient: Recipient
    segment: _Segment
    reads: bool
    read_after: float
    delivered_after: dict[str, float | None]  # channel -> receipt delay; None: never comes


def _address(channel: str, index: int, prefix: str) -> str:
    kind = CHANNEL_KINDS.get(channel)
    if kind is AddressKind.PHONE:
        return f"{prefix}{index % 10_000_000:07d}"
    if kind is AddressKind.EMAIL:
        return f"c{index}@example.com"
    return f"{100_000_000 + index}"


def _recipient(index: int, segment: _Segment) -> Recipient:
    named: dict[str, str] = {}
    other: dict[str, str] = {}
    for channel in segment.channels:
        address = _address(channel, index, segment.phone_prefix)
        (named if channel in CHANNEL_KINDS else other)[channel] = address
    return Recipient(
        id=f"c{index:07d}",
        region=segment.region,
        tags=frozenset(segment.tags),
        addresses=other,
        **named,  # type: ignore[arg-type]
    )


class _Recipients:
    """Recipients of one segment without re-validating each: the first is built (and
    so checked) in full; the rest are copies of it with their own id and addresses,
    which are made in the very form the check gives (E.164 numbers, plain ids)."""

    def __init__(self, segment: _Segment) -> None:
        self.segment = segment
        self.template: Recipient | None = None

    def make(self, index: int) -> Recipient:
        if self.template is None:
            self.template = _recipient(index, self.segment)
            return self.template
        made = copy.copy(self.template)
        other: dict[str, str] = {}
        object.__setattr__(made, "id", f"c{index:07d}")
        for channel in self.segment.channels:
            address = _address(channel, index, self.segment.phone_prefix)
            if channel in CHANNEL_KINDS:
                object.__setattr__(made, channel, address)
            else:
                other[channel] = address
        if other:
            object.__setattr__(made, "addresses", other)
        return made


def _arrival_times(scenario: Scenario, rng: random.Random) -> list[float]:
    traffic = scenario.model.traffic
    start, window, count = scenario.start_ts, traffic.window, traffic.deliveries
    if traffic.hourly is None:
        return sorted(start + rng.random() * window for _ in range(count))
    hours = max(1, int(-(-window // 3600)))
    first_hour = int(start // 3600) % 24
    weights = [traffic.hourly[(first_hour + h) % 24] for h in range(hours)]
    if not any(weights):
        weights = [1.0] * hours
    cumulative = list(itertools.accumulate(weights))
    times = []
    for _ in range(count):
        hour = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
        hour = min(hour, hours - 1)
        span = min(3600.0, window - hour * 3600.0)
        times.append(start + hour * 3600.0 + rng.random() * span)
    return sorted(times)


def draw_traffic(scenario: Scenario, rng: random.Random) -> list[Arrival]:
    """Every delivery of the scenario, in order of sending, from `rng` alone."""
    segments = scenario.model.segments
    cumulative = list(itertools.accumulate(s.share for s in segments))
    channels = scenario.model.channels
    makers = {id(s): _Recipients(s) for s in segments}
    pool = scenario.model.traffic.recipients
    customers: dict[int, _Segment] = {}  # with a pool: each customer's segment, once drawn
    arrivals = []
    for index, ts in enumerate(_arrival_times(scenario, rng)):
        who = index if pool is None else rng.randrange(pool)
        segment = customers.get(who) if pool is not None else None
        if segment is None:
            pick = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
            segment = segments[min(pick, len(segments) - 1)]
            if pool is not None:
                customers[who] = segment
        reads = rng.random() < segment.reads
        read_after = segment.read_after.sample(rng)
        delays: dict[str, float | None] = {}
        for channel in segment.channels:
            spec = channels.get(channel, _DEFAULT_CHANNEL)
            lost = spec.lost > 0 and rng.random() < spec.lost
            delay = spec.delivered.sample(rng)
            delays[channel] = None if lost else delay
        arrivals.append(
            Arrival(ts, makers[id(segment)].make(who), segment, reads, read_after, delays)
        )
    return arrivals


class World:
    """What the simulated providers consult: outages and each recipient's draws."""

    def __init__(self, scenario: Scenario, arrivals: list[Arrival]) -> None:
        self.scenario = scenario
        self.by_recipient = {a.recipient.id: a for a in arrivals}
        #: Each delivery's arrival, once sent (a repeat customer has several).
        self.by_delivery: dict[str, Arrival] = {}

    def arrival(self, request: SendRequest) -> Arrival | None:
        found = self.by_delivery.get(request.delivery_id)
        return found if found is not None else self.by_recipient.get(request.recipient.id)

    def outage(self, provider: str, channel: str, now: float) -> Outage | None:
        for outage in self.scenario.outages:
            if outage.start_ts <= now < outage.end_ts and (
                outage.provider == provider or outage.channel == channel
            ):
                return outage
        return None


class SimulatedProvider(Provider):
    """Stands in for one provider of the policy (same name, same channel).

    Each call goes to a `FakeProvider` playing the part the scenario calls for at that
    moment: `down` (refused connections), `transient` (5xx), `unreachable` (a messenger
    blocked for the recipient) or `no_receipt` (accepted); for an accepted message this
    provider then reports the receipts the recipient's draws say, on the clock.
    """

    type_name = "simulated"
    receipts = frozenset(ReceiptStatus)

    def __init__(
        self, name: str, channel: str, world: World, price: float | None, *, clock: Clock
    ) -> None:
        settings = FakeSettings(channel=channel)
        super().__init__(name, settings, clock=clock)
        self.world = world
        self.price = price
        spec = world.scenario.model.channels.get(channel, _DEFAULT_CHANNEL)
        self.reports_read = channel in READ_RECEIPTS if spec.reads is None else spec.reads
        self._parts: dict[Behavior, FakeProvider] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _part(self, behavior: Behavior) -> FakeProvider:
        part = self._parts.get(behavior)
        if part is None:
            settings = FakeSettings(
                channel=self.channel, behavior=behavior, failures=2**62, cost=self.price
            )
            part = self._parts[behavior] = FakeProvider(self.name, settings, clock=self.clock)
        return part

    async def _call(self, behavior: Behavior, request: SendRequest) -> SendResult:
        part = self._part(behavior)
        try:
            return await part.send(request)
        finally:
            part.calls.clear()  # the simulation keeps its own figures

    async def send(self, request: SendRequest) -> SendResult:
        now = self.clock.now()
        outage = self.world.outage(self.name, self.channel, now)
        if outage is not None and outage.fails == "refused":
            return await self._call("down", request)
        if outage is not None and outage.fails == "5xx":
            return await self._call("transient", request)
        arrival = self.world.arrival(request)
        blocked = None if arrival is None else arrival.segment.blocked.get(self.channel)
        if blocked == "unreachable":
            return await self._call("unreachable", request)
        result = await self._call("no_receipt", request)
        if outage is None and blocked is None and arrival is not None:
            delay = arrival.delivered_after.get(self.channel)
            if delay is not None:
                read = arrival.read_after if arrival.reads and self.reports_read else None
                task = asyncio.get_running_loop().create_task(
                    self._report(result.provider_message_id, request.attempt_id, delay, read)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return result

    async def _report(
        self, message_id: str, attempt_id: str, delay: float, read_after: float | None
    ) -> None:
        await self.clock.sleep(delay)
        statuses = [ReceiptStatus.DELIVERED]
        if read_after is not None and read_after <= 0:
            statuses.append(ReceiptStatus.READ)
        await self.emit(self._receipts(message_id, attempt_id, statuses))
        if read_after is not None and read_after > 0:
            await self.clock.sleep(read_after)
            await self.emit(self._receipts(message_id, attempt_id, [ReceiptStatus.READ]))

    def _receipts(
        self, message_id: str, attempt_id: str, statuses: list[ReceiptStatus]
    ) -> list[Receipt]:
        now = self.clock.now()
        return [
            Receipt(
                provider=self.name,
                provider_message_id=message_id,
                status=status,
                ts=now,
                attempt_id=attempt_id,
            )
            for status in statuses
        ]

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for part in self._parts.values():
            await part.aclose()
