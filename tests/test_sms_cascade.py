"""SMS in the cascade, through the public API on fake time: two gateways failing over,
segments and cost on any sms provider (fakes included), `max_segments`, `transliterate`,
the short SMS override, and `on_too_long` on every channel."""

from __future__ import annotations

from typing import ClassVar

import pytest

from cascade_notify import AttemptStatus, DeliveryStatus, Message, Notifier, Recipient
from cascade_notify.providers import registry
from cascade_notify.testing import FakeClock, FakeProvider, run_until_final
from cascade_notify.testing.plugin import NotifierFactory

PHONE = "+79161234567"
ANNA = Recipient(id="anna", sms=PHONE, telegram="123456789")
RUSSIAN = "Здравствуйте! Ваш заказ 1234 доставлен в пункт выдачи. Ждём вас до 20:00."

TWO_GATEWAYS = """
providers:
  gw1: {{type: fake, channel: sms, behavior: {gw1}, price_per_segment: 0.02, currency: EUR}}
  gw2: {{type: fake, channel: sms, behavior: deliver, price_per_segment: 0.05, currency: EUR}}
policies:
  p:
    steps:
      - {{channel: sms, providers: [gw1, gw2], timeout: 10m,
          retry: {{attempts: 5}}}}
"""


async def run(notifier: Notifier, clock: FakeClock, message: Message, who: Recipient = ANNA):
    delivery = await notifier.send(who, message)
    [final] = await run_until_final(notifier, clock, [delivery.id])
    return final


def trail(delivery) -> list[tuple[str, str]]:
    return [(a.provider, a.status.value) for a in delivery.attempts]


# -- failover ----------------------------------------------------------------------------


async def test_a_gateway_refusing_connections_fails_over_at_once(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """Gateway one down (connection refused) -> gateway two in the same instant, not after
    gateway one's retries nor the step's deadline."""
    notifier = await notifier_factory(TWO_GATEWAYS.format(gw1="down"))
    start = fake_clock.now()
    delivery = await run(notifier, fake_clock, Message(text="Your parcel has arrived."))
    assert delivery.status is DeliveryStatus.DELIVERED
    assert trail(delivery) == [("gw1", "transient"), ("gw2", "delivered")]
    assert delivery.attempts[1].started_ts == start
    assert delivery.cost == pytest.approx(0.05)  # gw1 never took it: nothing billed there


async def test_other_transient_errors_still_retry_the_same_gateway(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """A transient error that is not "cannot connect" (a 5xx, a 429) is retried on the same
    gateway inside the step's budget, as before."""
    notifier = await notifier_factory(TWO_GATEWAYS.format(gw1="transient"))
    delivery = await run(notifier, fake_clock, Message(text="Your parcel has arrived."))
    assert trail(delivery) == [("gw1", "transient"), ("gw1", "delivered")]


async def test_an_open_breaker_sends_to_gateway_two_directly(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """Gateway one's breaker open: gateway two is the first call."""
    notifier = await notifier_factory(TWO_GATEWAYS.format(gw1="deliver"))
    await notifier.breakers.open("gw1", "1h")
    delivery = await run(notifier, fake_clock, Message(text="Your parcel has arrived."))
    assert trail(delivery) == [("gw2", "delivered")]


# -- segments and cost -------------------------------------------------------------------

ONE_SMS = """
providers:
  tg: {{type: fake, channel: telegram, behavior: {tg}}}
  sms: {{type: fake, channel: sms, behavior: deliver, price_per_segment: 0.04{extra}}}
policies:
  p:
    steps:
      - {{channel: telegram, providers: [tg], wait_for: accepted}}
      - {{channel: sms, providers: [sms]{step}}}
"""


def one_sms(tg: str = "unreachable", step: str = "", extra: str = "") -> str:
    return ONE_SMS.format(tg=tg, step=step, extra=extra)


async def test_segments_encoding_and_cost_on_a_fake(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """A fake on sms records segments, encoding, segments x price and USD by default."""
    notifier = await notifier_factory(one_sms())
    delivery = await run(notifier, fake_clock, Message(text=RUSSIAN))
    sms = delivery.attempts[-1]
    assert (sms.segments, sms.encoding, sms.currency) == (2, "UCS-2", "USD")
    assert sms.cost == pytest.approx(0.08)
    assert delivery.attempts[0].segments is None  # telegram: no segments
    assert delivery.cost == pytest.approx(0.08)


async def test_a_messenger_success_records_no_sms_cost(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """Delivered on telegram: no SMS attempt, Delivery.cost is 0."""
    notifier = await notifier_factory(one_sms(tg="deliver"))
    delivery = await run(notifier, fake_clock, Message(text=RUSSIAN))
    assert delivery.channel == "telegram"
    assert [a.channel for a in delivery.attempts] == ["telegram"]
    assert delivery.cost == 0


async def test_a_reported_price_wins(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """The price a provider reports (the fake's `cost`) is the attempt's, not segments x price."""
    notifier = await notifier_factory(one_sms(extra=", cost: 0.5, currency: RUB"))
    delivery = await run(notifier, fake_clock, Message(text=RUSSIAN))
    sms = delivery.attempts[-1]
    assert (sms.cost, sms.currency, sms.segments) == (0.5, "RUB", 2)


async def test_transliterate_makes_it_gsm7_and_cheaper(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """`transliterate: true`: the Russian text goes in Latin letters, 1 GSM-7 segment."""
    notifier = await notifier_factory(one_sms(step=", transliterate: true"))
    delivery = await run(notifier, fake_clock, Message(text=RUSSIAN))
    sms = delivery.attempts[-1]
    assert (sms.segments, sms.encoding) == (1, "GSM-7")
    provider = notifier.providers["sms"]
    assert isinstance(provider, FakeProvider)
    assert provider.calls[-1].text.startswith("Zdravstvuyte! Vash zakaz 1234")


async def test_the_short_sms_override_is_sent(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """`Message.overrides["sms"]["text"]` is what the SMS step sends (and counts)."""
    notifier = await notifier_factory(one_sms(step=", max_segments: 1"))
    message = Message(text=RUSSIAN * 3, overrides={"sms": {"text": "Parcel 1234 is here."}})
    delivery = await run(notifier, fake_clock, message)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.attempts[-1].segments == 1
    provider = notifier.providers["sms"]
    assert isinstance(provider, FakeProvider)
    assert provider.calls[-1].text == "Parcel 1234 is here."


async def test_max_segments_skips_a_longer_text(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """Over `max_segments` with the default `on_too_long`: the step is skipped, reason
    too_long, and nothing is sent on it."""
    notifier = await notifier_factory(one_sms(step=", max_segments: 1"))
    delivery = await run(notifier, fake_clock, Message(text=RUSSIAN))
    assert delivery.status is DeliveryStatus.EXHAUSTED
    [skip] = delivery.skipped
    assert (skip.channel, skip.reason) == ("sms", "too_long")
    assert skip.detail == "the text is 2 UCS-2 segments; this step takes at most 1"
    assert [a.channel for a in delivery.attempts] == ["telegram"]


async def test_max_segments_with_transliteration_fits(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """Transliterated first, the same text fits one segment and is sent."""
    notifier = await notifier_factory(one_sms(step=", max_segments: 1, transliterate: true"))
    delivery = await run(notifier, fake_clock, Message(text=RUSSIAN))
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.attempts[-1].segments == 1


async def test_truncate_on_sms_keeps_max_segments(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """`on_too_long: truncate`: the text is cut to what 1 segment holds, marked `…`."""
    notifier = await notifier_factory(one_sms(step=", max_segments: 1, on_too_long: truncate"))
    delivery = await run(notifier, fake_clock, Message(text=RUSSIAN))
    sms = delivery.attempts[-1]
    assert (sms.segments, sms.encoding) == (1, "UCS-2")
    provider = notifier.providers["sms"]
    assert isinstance(provider, FakeProvider)
    sent = provider.calls[-1].text
    assert sent.endswith("…") and len(sent) <= 70
    assert RUSSIAN.startswith(sent[:-1])


async def test_split_on_sms_is_separate_messages(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """`on_too_long: split` on sms: several separate SMS of at most `max_segments` each, one
    attempt billed for all of them."""
    notifier = await notifier_factory(one_sms(step=", max_segments: 1, on_too_long: split"))
    delivery = await run(notifier, fake_clock, Message(text=RUSSIAN * 2))
    provider = notifier.providers["sms"]
    assert isinstance(provider, FakeProvider)
    parts = [c.text for c in provider.calls]
    assert len(parts) == 3
    assert all(len(p) <= 70 for p in parts)
    assert " ".join(parts).split() == (RUSSIAN * 2).split()
    sms = delivery.attempts[-1]
    assert delivery.status is DeliveryStatus.DELIVERED
    assert sms.segments == 3
    assert sms.cost == pytest.approx(0.12)
    assert sms.provider_message_id == provider.calls[-1].provider_message_id


class ShortFake(FakeProvider):
    """A fake messenger whose API takes 40 characters."""

    type_name = "short_fake"
    max_length: ClassVar[int | None] = 40


@pytest.fixture
def short_fake():
    registry.register("short_fake", ShortFake)
    yield
    registry.unregister("short_fake")


MESSENGER = """
providers:
  vb: {{type: short_fake, channel: viber, behavior: deliver}}
policies:
  p:
    steps:
      - {{channel: viber, providers: [vb]{step}}}
"""
LONG = "Your parcel A-1234 has arrived at the pick-up point on Lenina street, 5."


@pytest.mark.usefixtures("short_fake")
@pytest.mark.parametrize(
    ("option", "sent"),
    [
        ("split", ["Your parcel A-1234 has arrived at the", "pick-up point on Lenina street, 5."]),
        ("truncate", ["Your parcel A-1234 has arrived at the…"]),
    ],
)
async def test_on_too_long_on_a_messenger(
    notifier_factory: NotifierFactory, fake_clock: FakeClock, option: str, sent: list[str]
) -> None:
    """A messenger's `max_length`: split sends several messages, truncate cuts with `…`."""
    notifier = await notifier_factory(MESSENGER.format(step=f", on_too_long: {option}"))
    who = Recipient(id="anna", viber="01234567890A=")
    delivery = await run(notifier, fake_clock, Message(text=LONG), who)
    provider = notifier.providers["vb"]
    assert isinstance(provider, FakeProvider)
    assert [c.text for c in provider.calls] == sent
    assert delivery.status is DeliveryStatus.DELIVERED
    assert [a.status for a in delivery.attempts] == [AttemptStatus.DELIVERED]


@pytest.mark.usefixtures("short_fake")
async def test_on_too_long_skip_is_the_default_on_every_channel(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """Over a messenger's limit, by default: skipped with reason too_long, nothing sent."""
    notifier = await notifier_factory(MESSENGER.format(step=""))
    who = Recipient(id="anna", viber="01234567890A=")
    delivery = await run(notifier, fake_clock, Message(text=LONG), who)
    assert [s.reason for s in delivery.skipped] == ["too_long"]
    assert delivery.attempts == []


def test_max_segments_is_for_sms_steps_only() -> None:
    """`max_segments` on a messenger step is a PolicyError naming it."""
    from cascade_notify.errors import PolicyError

    with pytest.raises(PolicyError, match=r"steps\[0\]\.max_segments: applies to sms"):
        Notifier.from_yaml(
            """
providers:
  tg: {type: fake, channel: telegram}
policies:
  p:
    steps:
      - {channel: telegram, providers: [tg], wait_for: accepted, max_segments: 2}
"""
        )
