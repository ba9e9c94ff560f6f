"""Linking customers' accounts through the bots, for real: each bot's emulator opens the
deep link `Notifier.link()` made and posts the bot's update to the receipts endpoint
over HTTP; forged, expired and replayed links change nothing; and the whole story on
uvicorn: a recipient known only by id is reached on Telegram, blocks the bot, and is
reached on MAX."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from cascade_notify import DeliveryStatus, Event, Message, Notifier, Recipient
from cascade_notify.linking import issue
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import (
    MaxEmulator,
    TelegramEmulator,
    ViberEmulator,
    VkEmulator,
)
from cascade_notify.testing.emulators._base import Emulator
from cascade_notify.testing.emulators.fixtures import EmulatorFactory

from ._support import answered, served
from .conftest import Inbox

SECRET = "e2e-link-secret-0123456789abcdef-xyz"
CHAT = "123456789"
MAX_USER = "987654321"
#: channel -> the emulator, and the id the customer has there
BOTS: dict[str, tuple[type[Emulator], str, str]] = {
    "telegram": (TelegramEmulator, CHAT, "222333444"),
    "max": (MaxEmulator, MAX_USER, "555666777"),
    "viber": (ViberEmulator, "01234567890A=", "98765432109B="),
    "vk": (VkEmulator, "123456789", "223456789"),
}


def policy(settings: dict[str, Any]) -> str:
    providers = "\n".join(f"  {name}: {json.dumps(s)}" for name, s in settings.items())
    first = next(iter(settings))
    return f"""
links: {{secret: "{SECRET}", ttl: 1h}}
providers:
{providers}
  sms: {{type: fake, channel: sms}}
policies:
  service:
    steps:
      - {{channel: {first}, providers: [{first}], wait_for: accepted}}
      - {{channel: sms, providers: [sms], wait_for: delivered}}
"""


@dataclass
class Bot:
    channel: str
    emu: Emulator
    notifier: Notifier
    user: str
    other: str
    events: list[Event]

    def refused(self) -> list[str | None]:
        return [e.status for e in self.events if e.kind == "link_refused"]

    def linked(self) -> list[str | None]:
        return [e.detail for e in self.events if e.kind == "address_linked"]


@pytest.fixture(params=list(BOTS))
async def bot(
    request: pytest.FixtureRequest, emulators: EmulatorFactory, fake_clock: FakeClock, inbox: Inbox
) -> AsyncIterator[Bot]:
    channel: str = request.param
    cls, user, other = BOTS[channel]
    extra = {"secret_token": "tg-secret"} if cls is TelegramEmulator else {}
    emu = await emulators(cls, webhook_url=f"{inbox.url}/{channel}", **extra)
    settings = emu.settings()
    if channel == "telegram":
        settings["secret_token"] = "tg-secret"
    notifier = Notifier.from_yaml(policy({channel: settings}), clock=fake_clock, store="memory://")
    async with notifier:
        inbox.notifier = notifier
        events: list[Event] = []
        notifier.subscribe(events.append)
        yield Bot(channel, emu, notifier, user, other, events)


async def test_opening_the_link_links_the_account(bot: Bot) -> None:
    """The customer opens the recipient's link: the bot's update links their id on the
    channel, once, with an `address_linked` event naming the recipient."""
    link = bot.notifier.link(bot.channel, "anna")
    [hook] = await bot.emu.event("open_link", bot.user, link=link)
    assert hook.delivered
    assert await bot.notifier.addresses("anna") == {bot.channel: bot.user}
    assert bot.linked() == ["anna"] and bot.refused() == []


async def test_a_replayed_link_links_nothing(bot: Bot) -> None:
    """The same link opened again (by someone it was forwarded to, or a second time)
    changes nothing: the first account stays linked; the replay is `link_refused`."""
    link = bot.notifier.link(bot.channel, "anna")
    await bot.emu.event("open_link", bot.user, link=link)
    [other] = await bot.emu.event("open_link", bot.other, link=link)
    [again] = await bot.emu.event("open_link", bot.user, link=link)
    assert other.delivered and again.delivered  # acknowledged: the bot stops retrying
    assert await bot.notifier.addresses("anna") == {bot.channel: bot.user}
    assert bot.linked() == ["anna"] and bot.refused() == ["replayed", "replayed"]


async def test_an_expired_link_links_nothing(bot: Bot, fake_clock: FakeClock) -> None:
    """A link opened after its ttl (here 1 h) links nothing: `link_refused` expired."""
    link = bot.notifier.link(bot.channel, "anna")
    await fake_clock.advance(3600)
    [hook] = await bot.emu.event("open_link", bot.user, link=link)
    assert hook.delivered
    assert await bot.notifier.addresses("anna") == {}
    assert bot.refused() == ["expired"]


async def test_a_forged_link_links_nothing(bot: Bot) -> None:
    """A payload signed with another secret, a recipient id in the clear, a link made for
    another channel: none links anything (`link_refused` forged)."""
    link = bot.notifier.link(bot.channel, "anna")
    base, _, token = link.rpartition("=")
    limit = 128 if bot.channel == "max" else 64
    now = bot.notifier.clock.now()
    forged = [
        issue(b"not-our-secret" * 3, channel=bot.channel, recipient_id="eve", expires_ts=now + 60,
              limit=limit),
        "eve",
        issue(SECRET.encode(), channel="sms", recipient_id="eve", expires_ts=now + 60, limit=64),
        token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
    ]  # fmt: skip
    for payload in forged:
        [hook] = await bot.emu.event("open_link", bot.user, link=f"{base}={payload}")
        assert hook.delivered
    assert await bot.notifier.addresses("anna") == {}
    assert await bot.notifier.addresses("eve") == {}
    assert bot.refused() == ["forged"] * 4
    [hook] = await bot.emu.event("open_link", bot.user, link=link)  # the real one still links
    assert await bot.notifier.addresses("anna") == {bot.channel: bot.user}


async def test_a_new_link_after_blocking_links_again(bot: Bot, fake_clock: FakeClock) -> None:
    """After the customer blocked the bot (stopped it, denied messages), a new link
    opened links the address again; the old one stays spent."""
    gone = {"telegram": "block", "max": "bot_stopped", "vk": "message_deny"}.get(bot.channel)
    if gone is None:
        pytest.skip("Viber's unsubscribe is covered by its provider tests")
    old = bot.notifier.link(bot.channel, "anna")
    await bot.emu.event("open_link", bot.user, link=old)
    await fake_clock.advance(1)
    await bot.emu.event(gone, bot.user)
    assert await bot.notifier.addresses("anna") == {}
    await fake_clock.advance(1)
    await bot.emu.event("open_link", bot.user, link=old)
    assert await bot.notifier.addresses("anna") == {}
    await bot.emu.event("open_link", bot.user, link=bot.notifier.link(bot.channel, "anna"))
    assert await bot.notifier.addresses("anna") == {bot.channel: bot.user}


# -- the whole story on uvicorn ------------------------------------------------------------

STORY = """
links: {{secret: "{secret}"}}
providers:
  telegram: {telegram}
  max: {max}
  sms: {{type: fake, channel: sms}}
policies:
  service:
    steps:
      - {{channel: telegram, providers: [telegram], wait_for: accepted}}
      - {{channel: max, providers: [max], wait_for: accepted}}
      - {{channel: sms, providers: [sms], wait_for: delivered, timeout: 10m}}
"""


async def test_known_by_id_reached_on_telegram_then_blocked_then_on_max(
    emulators: EmulatorFactory, fake_clock: FakeClock
) -> None:
    """A recipient known only by id opens the Telegram deep link (the emulator posts
    `/start <payload>` to the real endpoint under uvicorn): the send reaches Telegram. The
    customer blocks the bot and opens the MAX link: the next send skips Telegram, saying
    it was blocked, and reaches MAX. Nothing goes to SMS."""
    tg = await emulators(TelegramEmulator, secret_token="tg-secret")
    mx = await emulators(MaxEmulator)
    text = STORY.format(
        secret=SECRET, telegram=json.dumps(tg.settings()), max=json.dumps(mx.settings())
    )
    anna = Recipient(id="anna")
    async with served(text, fake_clock) as (notifier, receipts):
        tg.webhook_url, mx.webhook_url = f"{receipts}/telegram", f"{receipts}/max"
        events: list[Event] = []
        notifier.subscribe(events.append)
        [start] = await tg.event("open_link", CHAT, link=notifier.link("telegram", "anna"))
        assert start.delivered and await notifier.addresses("anna") == {"telegram": CHAT}
        first = await notifier.send(anna, Message(text="Your parcel A-1234 has arrived."))
        await answered(notifier, fake_clock, [first.id])
        [first] = await run_until_final(notifier, fake_clock, [first.id])

        [blocked] = await tg.event("block", CHAT)
        [started] = await mx.event("open_link", MAX_USER, link=notifier.link("max", "anna"))
        assert blocked.delivered and started.delivered
        second = await notifier.send(anna, Message(text="Your parcel A-1234 is waiting."))
        await answered(notifier, fake_clock, [second.id])
        [second] = await run_until_final(notifier, fake_clock, [second.id])
        addresses = await notifier.addresses("anna")
        sms = notifier.providers["sms"]

    assert (first.status, first.channel) == (DeliveryStatus.DELIVERED, "telegram")
    assert first.recipient.telegram == CHAT and len(tg.sent_to(CHAT)) == 1
    assert (second.status, second.channel) == (DeliveryStatus.DELIVERED, "max")
    [skip] = second.skipped
    assert (skip.channel, skip.reason) == ("telegram", "address_gone")
    assert skip.detail is not None and "blocked" in skip.detail
    assert [a.channel for a in second.attempts] == ["max"]
    assert len(mx.sent_to(MAX_USER)) == 1 and len(tg.sent_to(CHAT)) == 1
    assert addresses == {"max": MAX_USER}
    assert getattr(sms, "sent", []) == []
    linked = [(e.channel, e.detail) for e in events if e.kind == "address_linked"]
    assert linked == [("telegram", "anna"), ("max", "anna")]
