"""The last resorts end to end: SMS undelivered, e-mail refused by a real SMTP server, and
a call task that waits for the morning in the customer's time zone; a late WhatsApp
`read` that cancels the open call task; and `withdraw_superseded` for messengers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from cascade_notify import AttemptStatus, DeliveryStatus, Event, Message, Notifier, Recipient
from cascade_notify.providers.fake import FakeProvider
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import CallCentreEmulator, WhatsAppEmulator
from cascade_notify.testing.emulators.fixtures import EmulatorFactory
from cascade_notify.testing.emulators.smtp import SmtpEmulator

from ._support import PHONE, answered, served

MOSCOW = ZoneInfo("Europe/Moscow")
ANNA = "anna@example.com"


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpEmulator]:
    async with SmtpEmulator() as server:
        yield server


async def at_local(clock: FakeClock, hour: int, minute: int) -> None:
    """Move the fake clock to hour:minute in Moscow on the day it shows."""
    local = datetime.fromtimestamp(clock.now(), MOSCOW)
    target = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    await clock.advance(target.timestamp() - clock.now())


LAST_RESORTS = """
providers:
  sms: {{type: fake, channel: sms, behavior: fail_receipt}}
  mail: {{type: smtp, host: 127.0.0.1, port: {smtp_port}, tls: none, from_addr: shop@example.com}}
  calls: {calls}
policies:
  service:
    ttl: 1d
    steps:
      - {{channel: sms, providers: [sms], wait_for: delivered, timeout: 10m}}
      - {{channel: email, providers: [mail], wait_for: accepted}}
      - channel: call
        providers: [calls]
        timeout: 4h
        quiet_hours: {{start: "21:00", end: "09:00", wait: true}}
"""


async def test_sms_undelivered_email_refused_call_at_nine_answered(
    emulators: EmulatorFactory, fake_clock: FakeClock, smtp: SmtpEmulator
) -> None:
    """At 23:30 in Moscow the SMS is undelivered and the mailbox unknown; the call task is
    created at 09:00 Moscow time, not before, and the operator's `answered` delivers."""
    centre = await emulators(CallCentreEmulator)
    centre.script(PHONE, {"do": "deliver", "delivered": 600})
    smtp.script(ANNA, "unknown_user")
    await at_local(fake_clock, 23, 30)
    policy = LAST_RESORTS.format(smtp_port=smtp.port, calls=json.dumps(centre.settings()))
    async with served(policy, fake_clock) as (notifier, receipts):
        centre.webhook_url = f"{receipts}/calls"
        anna = Recipient(id="anna", sms=PHONE, email=ANNA, call=PHONE, timezone="Europe/Moscow")
        delivery = await notifier.send(anna, Message(text="Ваша посылка A-1234 прибыла."))
        await answered(notifier, fake_clock, [delivery.id])
        [delivery] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert (delivery.status, delivery.channel) == (DeliveryStatus.DELIVERED, "call")
    sms, mail, call = delivery.attempts
    assert (sms.channel, sms.status) == ("sms", AttemptStatus.FAILED)
    assert (mail.channel, mail.status) == ("email", AttemptStatus.UNREACHABLE)
    assert smtp.messages == []  # refused at RCPT: no DATA
    started = datetime.fromtimestamp(call.started_ts, MOSCOW)
    assert (started.hour, started.minute) == (9, 0)
    assert started.date() > datetime.fromtimestamp(sms.started_ts, MOSCOW).date()
    [task] = [r for r in centre.requests if r.path == "/hooks/call-tasks"]
    assert task.at == call.started_ts
    data = task.json()["data"]
    assert data["window"]["not_before"] == started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert data["window"]["quiet_hours"] == {
        "start": "21:00", "end": "09:00", "time_zone": "Europe/Moscow",
    }  # fmt: skip
    assert [(a["channel"], a["outcome"]) for a in data["attempts"]] == [
        ("sms", "failed"),
        ("email", "unreachable"),
    ]
    assert data["summary"].startswith("SMS: ") and "E-mail: " in data["summary"]
    assert data["reason"] == "exhausted"
    assert [r.status.value for r in call.receipts] == ["delivered"]
    assert delivery.finished_ts == call.started_ts + 600


async def test_no_slot_left_before_the_ttl_skips_with_quiet_hours(
    emulators: EmulatorFactory, fake_clock: FakeClock, smtp: SmtpEmulator
) -> None:
    """When the quiet hours end less than a working slot (30 minutes) before the delivery
    expires, the call step is skipped with reason quiet_hours and no task is created."""
    centre = await emulators(CallCentreEmulator)
    smtp.script(ANNA, "unknown_user")
    await at_local(fake_clock, 23, 30)
    policy = LAST_RESORTS.format(smtp_port=smtp.port, calls=json.dumps(centre.settings())).replace(
        "ttl: 1d", "ttl: 35400"
    )  # 09:20 next morning
    async with served(policy, fake_clock) as (notifier, _):
        anna = Recipient(id="anna", sms=PHONE, email=ANNA, call=PHONE, timezone="Europe/Moscow")
        delivery = await notifier.send(anna, Message(text="hi"))
        await answered(notifier, fake_clock, [delivery.id])
        [delivery] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert delivery.status is DeliveryStatus.EXHAUSTED
    assert [(s.channel, s.reason) for s in delivery.skipped] == [("call", "quiet_hours")]
    assert centre.requests == []


LATE_READ = """
providers:
  whatsapp: {whatsapp}
  calls: {calls}
policies:
  service:
    steps:
      - {{channel: whatsapp, providers: [whatsapp], wait_for: read, timeout: 2m}}
      - {{channel: call, providers: [calls], timeout: 4h}}
"""


async def test_a_late_whatsapp_read_cancels_the_open_call_task(
    emulators: EmulatorFactory, fake_clock: FakeClock
) -> None:
    """WhatsApp is not read within its 2 minutes, the call task goes out; the `read` at
    10 minutes delivers on WhatsApp and the task is withdrawn (`call_task.cancelled`),
    recorded on its attempt, so nobody calls about a message that arrived."""
    wa = await emulators(WhatsAppEmulator)
    centre = await emulators(CallCentreEmulator)
    wa.script("79161234567", {"do": "read", "sent": 0, "delivered": 1, "read": 600})
    centre.script(PHONE, "no_receipt")
    policy = LATE_READ.format(
        whatsapp=json.dumps(wa.settings()), calls=json.dumps(centre.settings())
    )
    async with served(policy, fake_clock) as (notifier, receipts):
        wa.webhook_url = f"{receipts}/whatsapp"
        centre.webhook_url = f"{receipts}/calls"
        events: list[Event] = []
        notifier.subscribe(events.append)
        anna = Recipient(id="anna", whatsapp=PHONE, call=PHONE)
        delivery = await notifier.send(anna, Message(text="Your parcel A-1234 has arrived."))
        await answered(notifier, fake_clock, [delivery.id])
        await fake_clock.advance(121)
        await answered(notifier, fake_clock, [delivery.id])
        assert len(centre.tasks) == 1
        [delivery] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert (delivery.status, delivery.channel) == (DeliveryStatus.DELIVERED, "whatsapp")
    whatsapp, call = delivery.attempts
    assert whatsapp.status is AttemptStatus.READ
    assert call.status is AttemptStatus.WITHDRAWN
    assert call.error == "withdrawn: delivered on whatsapp"
    assert centre.cancelled == [call.id]
    cancel = centre.requests[-1].json()
    assert cancel["type"] == "call_task.cancelled"
    assert cancel["data"]["reason"] == "delivered_elsewhere"
    outcomes = [(e.channel, e.status) for e in events if e.kind == "outcome"]
    assert ("call", "withdrawing") in outcomes and ("call", "withdrawn") in outcomes


MESSENGERS = """
providers:
  tg: {{type: fake, channel: telegram, behavior: no_receipt, receipts: [delivered]}}
  sms: {{type: fake, channel: sms}}
policies:
  p:
{head}    steps:
      - {{channel: telegram, providers: [tg], wait_for: delivered, timeout: 1m{flag}}}
      - {{channel: sms, providers: [sms], wait_for: delivered}}
"""


@pytest.mark.parametrize(
    ("head", "flag", "withdrawn"),
    [
        ("", "", False),
        ("", ", withdraw_superseded: true", True),
        ("    withdraw_superseded: true\n", "", True),
        ("    withdraw_superseded: true\n", ", withdraw_superseded: false", False),
    ],
)
async def test_messengers_are_withdrawn_only_when_the_policy_says(
    fake_clock: FakeClock, head: str, flag: str, withdrawn: bool
) -> None:
    """A messenger's message that was sent but never confirmed is withdrawn after SMS
    delivers only under `withdraw_superseded: true` (the step's word over the policy's)."""
    notifier = Notifier.from_yaml(
        MESSENGERS.format(head=head, flag=flag), clock=fake_clock, store="memory://"
    )
    async with notifier:
        delivery = await notifier.send(
            Recipient(id="a", telegram="42", sms=PHONE), Message(text="x")
        )
        [delivery] = await run_until_final(notifier, fake_clock, [delivery.id])
        tg = notifier.providers["tg"]
        assert isinstance(tg, FakeProvider)
    assert (delivery.status, delivery.channel) == (DeliveryStatus.DELIVERED, "sms")
    first = delivery.attempts[0]
    if withdrawn:
        assert tg.withdrawn == [first.provider_message_id]
        assert first.status is AttemptStatus.WITHDRAWN
    else:
        assert tg.withdrawn == []
        assert first.status is AttemptStatus.TIMED_OUT
