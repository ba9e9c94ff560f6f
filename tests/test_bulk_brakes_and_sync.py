"""Brakes hold for batches and scheduled sends as for single ones; the sync facade has
the same verbs (`send(at=)`, `reschedule`, `send_many`)."""

from __future__ import annotations

from datetime import UTC, datetime

from cascade_notify import DeliveryStatus, Message, Recipient, Send, SyncNotifier
from cascade_notify.testing import FakeClock, FakeProvider, run_until_final
from cascade_notify.testing.plugin import NotifierFactory

CODE = Message(text="Your code is 4071.")
POLICY = """
worker: {concurrency: 1000, batch: 1000}
sender_country: RU
providers:
  wa:   {type: fake, channel: whatsapp, behavior: unreachable}
  sms:  {type: fake, channel: sms}
policies:
  service:
    brakes: {sms_per_prefix_per_hour: 20, prefix_digits: 7}
    steps:
      - {channel: whatsapp, providers: [wa]}
      - {channel: sms, providers: [sms]}
"""


def phone(number: str) -> Recipient:
    return Recipient(id=number, whatsapp=number, sms=number)


async def test_a_batch_does_not_get_past_the_pumping_brake(
    notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """2,000 SMS to one prefix by `send_many`, half of them scheduled: still 20 SMS."""
    notifier = await notifier_factory(POLICY)
    at = datetime.fromtimestamp(fake_clock.now() + 60, UTC)
    items = [
        Send(phone(f"+7916555{i % 1000:04d}"), CODE, at=at if i % 2 else None) for i in range(2000)
    ]
    result = await notifier.send_many(items, batch=300)
    assert result.ok and result.created == 2000
    done = await run_until_final(
        notifier, fake_clock, [d.id for d in result.deliveries if d is not None]
    )
    sms = notifier.providers["sms"]
    assert isinstance(sms, FakeProvider) and len(sms.calls) == 20
    assert sum(d.status is DeliveryStatus.DELIVERED for d in done) >= 20


def test_sync_notifier_schedules_reschedules_and_sends_many() -> None:
    clock = FakeClock()
    config = """
store: memory://
providers: {sms: {type: fake, channel: sms}}
policies: {p: {steps: [{channel: sms, providers: [sms], wait_for: accepted}]}}
"""
    anna = Recipient(id="anna", sms="+79161234567")
    with SyncNotifier.from_yaml(config, clock=clock) as notifier:
        later = datetime.fromtimestamp(clock.now() + 3600, UTC)
        sent = notifier.send(anna, Message(text="Tomorrow at 10:00"), at=later)
        assert sent.status is DeliveryStatus.SCHEDULED
        moved = notifier.reschedule(sent.id, datetime.fromtimestamp(clock.now() + 7200, UTC))
        assert moved.wake_ts == clock.now() + 7200
        result = notifier.send_many([(anna, Message(text=f"n{i}")) for i in range(5)], batch=2)
        assert result.ok and result.created == 5
        assert isinstance(notifier.providers["sms"], FakeProvider)
