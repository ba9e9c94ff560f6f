"""Surviving outages, through the public API on fake time: breakers, rate limits, brakes."""

from __future__ import annotations

from collections import Counter
from typing import Any

from cascade_notify import AttemptStatus, DeliveryStatus, Event, Message, Notifier, Recipient
from cascade_notify.errors import StoreError
from cascade_notify.stores import MemoryStore
from cascade_notify.stores.base import Claim, Transition
from cascade_notify.testing import FakeClock, FakeProvider, run_until_final
from cascade_notify.testing.plugin import NotifierFactory

PARCEL = Message(text="Your parcel A-1234 has arrived.")
ANNA = Recipient(id="anna", whatsapp="+79161234567", telegram="100200300")

OUTAGE = """
worker: {concurrency: 1000, batch: 1000}
providers:
  wa: {type: fake, channel: whatsapp, behavior: down, receipt_delay: 2s}
  tg: {type: fake, channel: telegram}
policies:
  service:
    steps:
      - {channel: whatsapp, providers: [wa], timeout: 2m, retry: {attempts: 3, backoff: 1s}}
      - {channel: telegram, providers: [tg], wait_for: accepted}
"""


def fake(notifier: Notifier, name: str) -> FakeProvider:
    provider = notifier.providers[name]
    assert isinstance(provider, FakeProvider)
    return provider


async def state(notifier: Notifier, provider: str) -> str:
    return next(b.state for b in await notifier.breakers.list() if b.provider == provider)


def tried(delivery, provider: str) -> bool:  # type: ignore[no-untyped-def]
    return any(a.provider == provider for a in delivery.attempts)


async def test_outage_opens_the_breaker_and_traffic_comes_back(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """10,000 deliveries in an outage: a few wait, the rest skip WhatsApp; probes bring it back."""
    notifier = await notifier_factory(OUTAGE)
    wa = fake(notifier, "wa")
    sent = [await notifier.send(ANNA, PARCEL) for _ in range(10_000)]
    done = await run_until_final(notifier, fake_clock, [d.id for d in sent])

    assert all(d.status is DeliveryStatus.DELIVERED and d.channel == "telegram" for d in done)
    waited = [d for d in done if tried(d, "wa")]
    assert len(wa.calls) <= 30 and len(waited) <= 30
    for delivery in done:
        if not tried(delivery, "wa"):
            assert delivery.skipped[0].reason == "circuit_open"
            assert delivery.attempts[0].started_ts == delivery.created_ts
    assert await state(notifier, "wa") == "open"

    wa.set_behavior("deliver")
    await fake_clock.advance(30)  # the cool-down: the breaker is half-open now
    probe = await notifier.send(ANNA, PARCEL)
    [probed] = await run_until_final(notifier, fake_clock, [probe.id])
    assert probed.channel == "whatsapp"
    assert await state(notifier, "wa") == "closed"
    after = [await notifier.send(ANNA, PARCEL) for _ in range(100)]
    finals = await run_until_final(notifier, fake_clock, [d.id for d in after])
    assert {d.channel for d in finals} == {"whatsapp"}


async def test_silent_outage_opens_the_breaker(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """Missing receipts open the breaker one timeout into a silent outage."""
    notifier = await notifier_factory(OUTAGE.replace("behavior: down", "behavior: no_receipt"))
    events: list[Event] = []
    notifier.subscribe(events.append)
    start = fake_clock.now()
    sent = []
    for _ in range(180):  # one delivery a second for three minutes
        sent.append(await notifier.send(ANNA, PARCEL))
        await fake_clock.advance(1)
    done = await run_until_final(notifier, fake_clock, [d.id for d in sent])

    [opened] = [e for e in events if e.kind == "breaker" and e.status == "open"][:1]
    assert opened.provider == "wa" and opened.detail == "5 failures in a row"
    assert start + 120 <= opened.ts <= start + 125
    cooling = [d for d in done if opened.ts < d.created_ts < opened.ts + 30]
    assert cooling and not any(tried(d, "wa") for d in cooling)
    assert all(d.status is DeliveryStatus.DELIVERED for d in done)


async def test_burst_is_paced_at_the_rate_limit(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """1,000 deliveries at once to a 30/s provider go out at 30/s of fake time, none lost."""
    notifier = await notifier_factory("""
worker: {concurrency: 1000, batch: 1000}
providers:
  tg: {type: fake, channel: telegram, rate_limit: {per_second: 30}}
policies:
  service: {steps: [{channel: telegram, providers: [tg], wait_for: accepted}]}
""")
    start = fake_clock.now()
    people = [Recipient(id=f"c{i}", telegram=str(1000 + i)) for i in range(1000)]
    sent = [await notifier.send(person, PARCEL) for person in people]
    done = await run_until_final(notifier, fake_clock, [d.id for d in sent])

    assert all(d.status is DeliveryStatus.DELIVERED and len(d.attempts) == 1 for d in done)
    times = sorted(call.ts - start for call in fake(notifier, "tg").calls)
    assert len(times) == 1000 and {c.outcome for c in fake(notifier, "tg").calls} == {"accepted"}
    assert all(
        later - earlier >= 1 - 1e-6 for earlier, later in zip(times, times[30:], strict=False)
    )
    assert 999 / 30 - 0.01 <= times[-1] <= 999 / 30 + 0.01


async def test_one_chat_gets_one_message_a_second(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """Five messages to one chat under a per-recipient limit of 1/s leave a second apart."""
    notifier = await notifier_factory("""
providers:
  tg: {type: fake, channel: telegram, rate_limit: {per_second: 30, per_recipient_per_second: 1}}
policies:
  service: {steps: [{channel: telegram, providers: [tg], wait_for: accepted}]}
""")
    start = fake_clock.now()
    sent = [await notifier.send(ANNA, PARCEL) for _ in range(5)]
    await run_until_final(notifier, fake_clock, [d.id for d in sent])
    assert [c.ts - start for c in fake(notifier, "tg").calls] == [0, 1, 2, 3, 4]


async def test_ambiguous_send_is_never_sent_twice(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """A send that timed out after the provider took it is never repeated."""
    notifier = await notifier_factory(
        OUTAGE.replace("behavior: down, receipt_delay: 2s", "behavior: unknown, receipt_delay: 30s")
    )
    sent = [await notifier.send(ANNA, PARCEL) for _ in range(20)]
    done = await run_until_final(notifier, fake_clock, [d.id for d in sent])
    per_delivery = Counter(call.delivery_id for call in fake(notifier, "wa").calls)
    assert per_delivery and set(per_delivery.values()) == {1}
    for delivery in done:
        if tried(delivery, "wa"):
            assert delivery.channel == "whatsapp"
            assert delivery.finished_ts == delivery.created_ts + 30
        else:
            assert delivery.skipped[0].reason == "circuit_open"


async def test_retry_after_is_waited_to_the_second(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """A 429 asking for 7 s is retried 7 s later on the fake clock, not a moment before."""
    notifier = await notifier_factory(
        OUTAGE.replace("behavior: down", "behavior: transient, failures: 1, retry_after: 7s")
    )
    delivery = await notifier.send(ANNA, PARCEL)
    await fake_clock.advance(6.99)
    assert len(fake(notifier, "wa").calls) == 1
    [done] = await run_until_final(notifier, fake_clock, [delivery.id])
    first, second = done.attempts
    assert first.status.value == "transient" and second.status.value == "delivered"
    assert second.started_ts - first.finished_ts == 7


async def test_breakers_by_hand(notifier_factory: NotifierFactory, fake_clock: FakeClock) -> None:
    """An operator opens a breaker for 2 h (sends skip it), and closes it again by hand."""
    notifier = await notifier_factory(OUTAGE.replace("behavior: down", "behavior: deliver"))
    info = await notifier.breakers.open("wa", "2h", reason="blocked in RU")
    assert (info.state, info.manual, info.until) == ("open", True, fake_clock.now() + 7200)
    [skipped] = await run_until_final(
        notifier, fake_clock, [(await notifier.send(ANNA, PARCEL)).id]
    )
    assert skipped.channel == "telegram" and skipped.skipped[0].reason == "circuit_open"
    await notifier.breakers.close("wa")
    [back] = await run_until_final(notifier, fake_clock, [(await notifier.send(ANNA, PARCEL)).id])
    assert back.channel == "whatsapp"


async def test_a_breaker_opened_by_hand_probes_when_its_time_is_up(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """When the hand-set time runs out the breaker is half-open, and one success closes it."""
    notifier = await notifier_factory(OUTAGE.replace("behavior: down", "behavior: deliver"))
    await notifier.breakers.open("wa", 3600)
    await fake_clock.advance(3600)
    assert await state(notifier, "wa") == "half_open"
    [done] = await run_until_final(notifier, fake_clock, [(await notifier.send(ANNA, PARCEL)).id])
    assert done.channel == "whatsapp" and await state(notifier, "wa") == "closed"


async def test_the_tail_of_a_silent_outage_does_not_reopen_the_breaker(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """Time-outs of messages sent during an outage do not reopen a breaker probes have closed."""
    notifier = await notifier_factory(OUTAGE.replace("behavior: down", "behavior: no_receipt"))
    events: list[Event] = []
    notifier.subscribe(events.append)
    start = fake_clock.now()
    sent = []
    for second in range(300):
        if second == 125:
            fake(notifier, "wa").set_behavior("deliver")
        sent.append(await notifier.send(ANNA, PARCEL))
        await fake_clock.advance(1)
    done = await run_until_final(notifier, fake_clock, [d.id for d in sent])
    changes = [(e.status, round(e.ts - start)) for e in events if e.kind == "breaker"]
    assert [status for status, _ in changes] == ["open", "closed"]
    closed = changes[1][1]
    assert all(d.channel == "whatsapp" for d in done if d.created_ts - start > closed)


PROBED = """
worker: {lease: 10s}
providers:
  wa: {type: fake, channel: whatsapp, breaker: {probes: 1}}
  tg: {type: fake, channel: telegram}
policies:
  service:
    steps:
      - {channel: whatsapp, providers: [wa], timeout: 2m, wait_for: accepted}
      - {channel: telegram, providers: [tg], wait_for: accepted}
"""


class _IntentFailsOnce:
    """The memory store, but the first write of an intent to send to `wa` fails."""

    def __init__(self, inner: MemoryStore) -> None:
        self._inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def commit(self, claim: Claim, transition: Transition) -> None:
        sending = [a for a in transition.attempts if a.status is AttemptStatus.SENDING]
        if not self.failed and any(a.provider == "wa" for a in sending):
            self.failed = True
            raise StoreError("the store went away")
        await self._inner.commit(claim, transition)


async def test_a_probe_whose_intent_was_not_written_is_still_made(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """Half-open with one probe slot: a delivery granted the probe whose intent to send could
    not be written probes WhatsApp when it is retried, not skip it as if the breaker were open."""
    store = _IntentFailsOnce(MemoryStore())
    notifier = await notifier_factory(PROBED, store=store)
    await notifier.breakers.open("wa", 30)
    await fake_clock.advance(30)
    delivery = await notifier.send(ANNA, PARCEL)
    [done] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert store.failed
    assert done.channel == "whatsapp" and not done.skipped
