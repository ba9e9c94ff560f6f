"""Brakes against SMS pumping and runaway cost, through the public API on fake time."""

from __future__ import annotations

from collections import Counter

from cascade_notify import DeliveryStatus, Event, Message, Notifier, Recipient
from cascade_notify.testing import FakeClock, FakeProvider, run_until_final
from cascade_notify.testing.plugin import NotifierFactory

CODE = Message(text="Your code is 4071.")

POLICY = """
worker: {concurrency: 1000, batch: 1000}
sender_country: RU
providers:
  wa:   {type: fake, channel: whatsapp, behavior: unreachable}
  sms:  {type: fake, channel: sms, cost: 0.5}
  call: {type: fake, channel: call}
policies:
  service:
    brakes: {BRAKES}
    steps:
      - {channel: whatsapp, providers: [wa]}
      - {channel: sms, providers: [sms]}
      - {channel: call, providers: [call]}
"""
PUMPING_BRAKES = "{sms_per_prefix_per_hour: 20, calls_per_prefix_per_hour: 5, prefix_digits: 7}"


def policy(brakes: str = "{}") -> str:
    return POLICY.replace("{BRAKES}", brakes)


def fake(notifier: Notifier, name: str) -> FakeProvider:
    provider = notifier.providers[name]
    assert isinstance(provider, FakeProvider)
    return provider


def phone(number: str, rid: str | None = None) -> Recipient:
    return Recipient(id=rid or number, whatsapp=number, sms=number, call=number)


def reasons(delivery) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.reason for s in delivery.skipped]


async def test_pumping_one_prefix_is_braked(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """10,000 sends to 1,000 numbers of one prefix: 20 SMS and 5 calls go out."""
    notifier = await notifier_factory(policy(PUMPING_BRAKES))
    events: list[Event] = []
    notifier.subscribe(events.append)
    numbers = [phone(f"+7916555{i:04d}") for i in range(1000)]
    sent = [await notifier.send(numbers[i % 1000], CODE) for i in range(10_000)]
    done = await run_until_final(notifier, fake_clock, [d.id for d in sent])

    assert len(fake(notifier, "sms").calls) == 20
    assert len(fake(notifier, "call").calls) == 5
    assert Counter(d.status for d in done) == {
        DeliveryStatus.DELIVERED: 25,
        DeliveryStatus.EXHAUSTED: 9975,
    }
    brakes = Counter((e.channel, e.status) for e in events if e.kind == "brake")
    assert brakes == {("sms", "brake_prefix"): 9980, ("call", "brake_prefix"): 9975}
    sample = next(d for d in done if d.status is DeliveryStatus.EXHAUSTED)
    detail = next(s.detail for s in sample.skipped if s.channel == "sms")
    assert detail == "20 SMS to numbers starting +7916555 this hour, the limit"


async def test_ordinary_traffic_is_not_braked(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """10,000 sends to distinct numbers across allowed countries and prefixes all go by SMS."""
    notifier = await notifier_factory(
        policy("{sms_per_prefix_per_hour: 20, allowed_countries: [RU, BY]}")
    )
    russia = [f"+7916{i % 1000:03d}{i // 1000:04d}" for i in range(9000)]
    belarus = [f"+37529{10 + i % 90:02d}{i // 90:05d}" for i in range(1000)]
    people = [Recipient(id=n, whatsapp=n, sms=n) for n in russia + belarus]
    sent = [await notifier.send(person, CODE) for person in people]
    done = await run_until_final(notifier, fake_clock, [d.id for d in sent])

    assert all(d.status is DeliveryStatus.DELIVERED and d.channel == "sms" for d in done)
    assert not [r for d in done for r in reasons(d) if r.startswith("brake")]
    assert len(fake(notifier, "sms").calls) == 10_000


async def test_per_recipient_brake_by_default(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """By default one number gets 5 SMS and 2 calls an hour, and SMS again the next hour."""
    notifier = await notifier_factory(policy())
    boris = phone("+79161234567", "boris")
    first = [await notifier.send(boris, CODE) for _ in range(8)]
    done = await run_until_final(notifier, fake_clock, [d.id for d in first])
    assert [d.channel for d in done] == ["sms"] * 5 + ["call"] * 2 + [None]
    assert reasons(done[-1]) == ["brake_recipient", "brake_recipient"]
    await fake_clock.advance(3600)
    [later] = await run_until_final(notifier, fake_clock, [(await notifier.send(boris, CODE)).id])
    assert later.channel == "sms"


async def test_countries_default_to_the_senders_own(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """With `sender_country: RU`, an SMS to a UK number is braked; listing GB allows it."""
    uk = phone("+447400123456", "uk")
    notifier = await notifier_factory(policy())
    [refused] = await run_until_final(notifier, fake_clock, [(await notifier.send(uk, CODE)).id])
    assert refused.status is DeliveryStatus.EXHAUSTED
    assert reasons(refused) == ["brake_country", "brake_country"]
    assert refused.skipped[0].detail == "sms to GB is not allowed (allowed: RU)"
    assert fake(notifier, "sms").calls == []

    allowing = await notifier_factory(policy("{allowed_countries: [RU, GB]}"))
    [sent] = await run_until_final(allowing, fake_clock, [(await allowing.send(uk, CODE)).id])
    assert sent.channel == "sms"


async def test_no_sender_country_allows_every_country(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """A file with neither `sender_country` nor `allowed_countries` restricts no country."""
    notifier = await notifier_factory(policy().replace("sender_country: RU\n", ""))
    uk = phone("+447400123456", "uk")
    [sent] = await run_until_final(notifier, fake_clock, [(await notifier.send(uk, CODE)).id])
    assert sent.channel == "sms"


async def test_cost_budget_per_hour(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """At 0.5 an SMS and a budget of 2 an hour, the fifth SMS is braked until the hour ends."""
    notifier = await notifier_factory(policy("{cost_per_hour: 2, calls_per_recipient_per_hour: 0}"))
    people = [phone(f"+791612345{i:02d}") for i in range(5)]
    sent = [await notifier.send(person, CODE) for person in people]
    done = await run_until_final(notifier, fake_clock, [d.id for d in sent])
    assert [d.channel for d in done] == ["sms"] * 4 + [None]
    assert reasons(done[-1]) == ["brake_cost", "brake_recipient"]
    assert done[-1].skipped[0].detail == (
        "2 spent on sms and calls by policy service this hour; budget 2"
    )
    await fake_clock.advance(3600)
    [later] = await run_until_final(
        notifier, fake_clock, [(await notifier.send(people[-1], CODE)).id]
    )
    assert later.channel == "sms"


async def test_brakes_leave_messenger_steps_alone(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """Brakes count only sms and call steps: twenty WhatsApp messages to one number all go."""
    notifier = await notifier_factory(
        policy().replace("behavior: unreachable", "behavior: deliver")
    )
    boris = phone("+79161234567", "boris")
    sent = [await notifier.send(boris, CODE) for _ in range(20)]
    done = await run_until_final(notifier, fake_clock, [d.id for d in sent])
    assert {d.channel for d in done} == {"whatsapp"}
