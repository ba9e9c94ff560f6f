"""The first three channels for real, end to end: whatsapp_cloud → telegram_bot → viber_bot
→ sms (fake), each provider against its emulator over HTTP, receipts in through the real
webhook endpoint under uvicorn, and no secret in any log line at DEBUG."""

from __future__ import annotations

import json
import logging

import pytest

from cascade_notify import AttemptStatus, DeliveryStatus, Event, Message, Recipient
from cascade_notify.providers.viber import ViberBotProvider
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import TelegramEmulator, ViberEmulator, WhatsAppEmulator
from cascade_notify.testing.emulators.fixtures import EmulatorFactory

from ._support import PHONE, answered, served

CHAT = "123456789"
VIBER_USER = "01234567890A="

POLICY = """
providers:
  whatsapp: {whatsapp}
  telegram: {telegram}
  viber: {viber}
  sms: {{type: fake, channel: sms}}
policies:
  service:
    steps:
      - {{channel: whatsapp, providers: [whatsapp], wait_for: delivered, timeout: 2m}}
      - {{channel: telegram, providers: [telegram], wait_for: accepted}}
      - {{channel: viber, providers: [viber], wait_for: read, timeout: 10m}}
      - {{channel: sms, providers: [sms], wait_for: delivered, timeout: 10m}}
"""


async def test_whatsapp_undeliverable_telegram_blocked_viber_read(
    emulators: EmulatorFactory, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """WhatsApp says undeliverable, the Telegram user blocked the bot, Viber delivers and
    then reports seen: the delivery ends delivered on viber with the whole history, the
    blocked bot is a `gone` signal, and no token or secret reaches a log line."""
    caplog.set_level(logging.DEBUG)
    wa = await emulators(WhatsAppEmulator)
    tg = await emulators(TelegramEmulator)
    vb = await emulators(ViberEmulator)
    policy = POLICY.format(
        whatsapp=json.dumps(wa.settings()),
        telegram=json.dumps(tg.settings()),
        viber=json.dumps(vb.settings()),
    )
    async with served(policy, fake_clock) as (notifier, receipts):
        wa.webhook_url = f"{receipts}/whatsapp"
        assert await wa.verify_webhook()  # Meta's GET handshake against our endpoint
        viber = notifier.providers["viber"]
        assert isinstance(viber, ViberBotProvider)
        await viber.set_webhook(f"{receipts}/viber")
        events: list[Event] = []
        notifier.subscribe(events.append)
        wa.script(PHONE.lstrip("+"), "undeliverable")
        tg.script(CHAT, "blocked")
        vb.script(VIBER_USER, "read")
        recipient = Recipient(id="anna", whatsapp=PHONE, telegram=CHAT, viber=VIBER_USER, sms=PHONE)
        sent = await notifier.send(recipient, Message(text="Your parcel A-1234 has arrived."))
        await answered(notifier, fake_clock, [sent.id])
        [done] = await run_until_final(notifier, fake_clock, [sent.id])
    assert (done.status, done.channel) == (DeliveryStatus.DELIVERED, "viber")
    history = [(a.channel, a.status, a.code) for a in done.attempts]
    assert history == [
        ("whatsapp", AttemptStatus.UNREACHABLE, "131026"),
        ("telegram", AttemptStatus.UNREACHABLE, "blocked"),
        ("viber", AttemptStatus.READ, None),
    ]
    assert [r.status.value for r in done.attempts[2].receipts] == ["delivered", "read"]
    assert done.skipped == [] and "blocked" in (done.attempts[1].error or "")
    gone = [(e.channel, e.detail) for e in events if e.kind == "signal" and e.status == "gone"]
    assert gone == [("telegram", "blocked")]
    assert len(wa.requests) >= 1 and len(tg.sent_to(CHAT)) == 0 and len(vb.outbox) == 1
    secrets = [
        wa.access_token,
        wa.app_secret,
        wa.verify_token,
        tg.token,
        vb.auth_token,
    ]
    lines = [caplog.handler.format(record) for record in caplog.records]
    assert lines, "the run logged nothing at DEBUG"
    leaked = [line for line in lines for secret in secrets if secret and secret in line]
    assert leaked == []
