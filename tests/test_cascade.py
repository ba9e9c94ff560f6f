"""The rules of the cascade, through the public API, on fake time."""

from __future__ import annotations

import pytest

from cascade_notify import (
    AttemptStatus,
    DeliveryNotFound,
    DeliveryStatus,
    Message,
    Notifier,
    Receipt,
    ReceiptStatus,
    Recipient,
    WaitTimeout,
)
from cascade_notify.testing import FakeClock, FakeProvider, run_until_final
from cascade_notify.testing.plugin import NotifierFactory

CHAIN = """
providers:
  wa:   {{type: fake, channel: whatsapp, behavior: {wa}, receipt_delay: 5s}}
  tg:   {{type: fake, channel: telegram, behavior: {tg}}}
  sms:  {{type: fake, channel: sms, behavior: {sms}, receipt_delay: 10s}}
  call: {{type: fake, channel: call, behavior: deliver, receipt_delay: 1m}}
policies:
  service:
    ttl: {ttl}
    steps:
      - {{channel: whatsapp, providers: [wa], timeout: 2m, retry: {{attempts: 3, backoff: 1s}}}}
      - {{channel: telegram, providers: [tg], wait_for: accepted}}
      - {{channel: sms, providers: [sms], timeout: 5m}}
      - {{channel: call, providers: [call], timeout: 1h}}
"""


def chain(
    wa: str = "deliver", tg: str = "no_receipt", sms: str = "deliver", ttl: str = "24h"
) -> str:
    return CHAIN.format(wa=wa, tg=tg, sms=sms, ttl=ttl)


def fake(notifier: Notifier, name: str) -> FakeProvider:
    provider = notifier.providers[name]
    assert isinstance(provider, FakeProvider)
    return provider


async def run(
    notifier: Notifier, clock: FakeClock, recipient: Recipient, message: Message, **kwargs: str
):
    delivery = await notifier.send(recipient, message, **kwargs)
    [final] = await run_until_final(notifier, clock, [delivery.id])
    return final


def trail(delivery) -> list[tuple[str, str]]:
    return [(a.provider, a.status.value) for a in delivery.attempts]


async def test_delivered_on_first_channel(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """A working first channel delivers, and nothing else is tried."""
    notifier = await notifier_factory(chain())
    delivery = await run(notifier, fake_clock, anna, parcel)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.channel == "whatsapp"
    assert trail(delivery) == [("wa", "delivered")]
    assert delivery.finished_ts == delivery.created_ts + 5
    assert fake(notifier, "tg").calls == []


async def test_send_returns_at_once_pending(notifier_factory: NotifierFactory, anna, parcel):
    """send() persists and returns a pending delivery before any receipt."""
    notifier = await notifier_factory(chain())
    delivery = await notifier.send(anna, parcel)
    assert delivery.status is DeliveryStatus.PENDING
    assert (await notifier.get(delivery.id)).id == delivery.id


async def test_step_without_address_is_skipped(
    notifier_factory: NotifierFactory, fake_clock, parcel
):
    """A step whose channel the recipient has no address for is skipped, with the reason."""
    notifier = await notifier_factory(chain())
    bob = Recipient(id="bob", sms="+79161234567")
    delivery = await run(notifier, fake_clock, bob, parcel)
    assert delivery.channel == "sms"
    assert [(s.channel, s.reason) for s in delivery.skipped] == [
        ("whatsapp", "no_address"),
        ("telegram", "no_address"),
    ]


async def test_opted_out_channel_is_skipped(notifier_factory: NotifierFactory, fake_clock, parcel):
    """A channel the recipient opted out of is never used."""
    notifier = await notifier_factory(chain())
    bob = Recipient(id="bob", whatsapp="+79161234567", telegram="1", opted_out={"whatsapp"})
    delivery = await run(notifier, fake_clock, bob, parcel)
    assert delivery.channel == "telegram"
    assert delivery.skipped[0].reason == "opted_out"
    assert fake(notifier, "wa").calls == []


async def test_category_excludes_step(notifier_factory: NotifierFactory, fake_clock, anna):
    """A marketing message skips steps limited to transactional messages."""
    policy = chain(wa="unreachable", tg="fail").replace(
        "channel: sms, providers: [sms], timeout: 5m",
        "channel: sms, providers: [sms], categories: [transactional]",
    )
    notifier = await notifier_factory(policy)
    promo = Message(text="Spring sale", category="marketing")
    delivery = await run(notifier, fake_clock, anna, promo)
    assert delivery.channel == "call"
    assert ("sms", "category") in [(s.channel, s.reason) for s in delivery.skipped]
    assert fake(notifier, "sms").calls == []


@pytest.mark.parametrize(("hour_utc", "skipped"), [(20, True), (8, False)])
async def test_quiet_hours_in_recipient_time_zone(
    notifier_factory: NotifierFactory, hour_utc, skipped, parcel
):
    """Quiet hours are read in the recipient's time zone (Moscow is UTC+3)."""
    clock = FakeClock(start=1_767_225_600.0 + hour_utc * 3600)  # 2026-01-01 hh:00 UTC
    policy = chain().replace(
        "channel: call, providers: [call], timeout: 1h",
        "channel: call, providers: [call], timeout: 1h, "
        "quiet_hours: {start: '22:00', end: '09:00'}",
    )
    notifier = await notifier_factory(policy, clock=clock)
    bob = Recipient(id="bob", call="+79161234567", timezone="Europe/Moscow")
    delivery = await run(notifier, clock, bob, parcel)
    reasons = [s.reason for s in delivery.skipped]
    assert ("quiet_hours" in reasons) is skipped
    assert delivery.status is (DeliveryStatus.EXHAUSTED if skipped else DeliveryStatus.DELIVERED)


async def test_providers_in_a_step_are_tried_in_order(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """When the first SMS gateway rejects, the second one in the same step is used."""
    notifier = await notifier_factory("""
providers:
  gw1: {type: fake, channel: sms, behavior: fail}
  gw2: {type: fake, channel: sms}
policies:
  p: {steps: [{channel: sms, providers: [gw1, gw2]}]}
""")
    delivery = await run(notifier, fake_clock, anna, parcel)
    assert trail(delivery) == [("gw1", "failed"), ("gw2", "delivered")]
    assert delivery.channel == "sms"


async def test_transient_errors_are_retried_within_budget(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """Two transient failures then success: three calls, no fallback."""
    notifier = await notifier_factory(
        chain(wa="transient").replace("behavior: transient", "behavior: transient, failures: 2")
    )
    delivery = await run(notifier, fake_clock, anna, parcel)
    assert trail(delivery) == [("wa", "transient"), ("wa", "transient"), ("wa", "delivered")]
    first, second, third = delivery.attempts
    assert second.started_ts > first.finished_ts and third.started_ts > second.finished_ts


async def test_transient_budget_exhausted_moves_on(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """A provider that stays down is tried `retry.attempts` times, then the next step."""
    notifier = await notifier_factory(chain(wa="down"))
    delivery = await run(notifier, fake_clock, anna, parcel)
    assert trail(delivery) == [("wa", "transient")] * 3 + [("tg", "accepted")]
    assert delivery.channel == "telegram"


@pytest.mark.parametrize(
    ("behavior", "status"), [("fail", "failed"), ("unreachable", "unreachable")]
)
async def test_permanent_and_unreachable_move_on_at_once(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel, behavior, status
):
    """A permanent or unreachable error is never retried: the next step starts at once."""
    notifier = await notifier_factory(chain(wa=behavior))
    delivery = await run(notifier, fake_clock, anna, parcel)
    assert trail(delivery) == [("wa", status), ("tg", "accepted")]
    assert delivery.attempts[1].started_ts == delivery.created_ts


async def test_retry_after_is_honoured(notifier_factory: NotifierFactory, fake_clock, anna, parcel):
    """A transient error asking for 7 s is retried after 7 s of fake time, not before."""
    notifier = await notifier_factory(
        chain(wa="transient").replace("behavior: transient", "behavior: transient, retry_after: 7s")
    )
    delivery = await run(notifier, fake_clock, anna, parcel)
    first, second = delivery.attempts
    assert second.started_ts - first.finished_ts >= 7
    assert second.started_ts - first.finished_ts < 7 + 2


async def test_success_waits_for_the_receipt(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """An accepted message is not a delivered one: the step waits for the receipt."""
    notifier = await notifier_factory(chain())
    delivery = await notifier.send(anna, parcel)
    await fake_clock.advance(4)
    mid = await notifier.get(delivery.id)
    assert mid.status is DeliveryStatus.PENDING
    assert mid.attempts[0].status is AttemptStatus.ACCEPTED
    await fake_clock.advance(1)
    assert (await notifier.get(delivery.id)).status is DeliveryStatus.DELIVERED


async def test_failed_receipt_moves_on_before_deadline(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """A `failed` receipt ends the step at once, not at its deadline."""
    notifier = await notifier_factory(chain(wa="fail_receipt"))
    delivery = await run(notifier, fake_clock, anna, parcel)
    assert trail(delivery) == [("wa", "failed"), ("tg", "accepted")]
    assert delivery.attempts[0].receipts[0].code == "131026"
    assert delivery.attempts[1].started_ts == delivery.created_ts + 5


async def test_deadline_without_receipt_moves_on(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """No receipt by the step's timeout: the attempt times out and the next step starts."""
    notifier = await notifier_factory(chain(wa="no_receipt"))
    delivery = await run(notifier, fake_clock, anna, parcel)
    assert trail(delivery) == [("wa", "timed_out"), ("tg", "accepted")]
    assert delivery.attempts[1].started_ts == delivery.created_ts + 120


async def test_wait_for_read_needs_a_read_receipt(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """A step waiting for `read` is not satisfied by `delivered`."""
    policy = """
providers:
  a: {type: fake, channel: app, behavior: deliver}
  b: {type: fake, channel: app, behavior: read, receipt_delay: 3s}
policies:
  only_a: {steps: [{channel: app, providers: [a], wait_for: read, timeout: 1m}]}
  only_b: {steps: [{channel: app, providers: [b], wait_for: read, timeout: 1m}]}
default_policy: only_a
"""
    notifier = await notifier_factory(policy)
    bob = Recipient(id="bob", app="user-7")
    unread = await run(notifier, fake_clock, bob, parcel)
    assert unread.status is DeliveryStatus.EXHAUSTED
    assert [r.status for r in unread.attempts[0].receipts] == [ReceiptStatus.DELIVERED]
    read = await run(notifier, fake_clock, bob, parcel, policy="only_b")
    assert read.status is DeliveryStatus.DELIVERED
    assert read.finished_ts == read.created_ts + 3


async def test_ttl_expiry(notifier_factory: NotifierFactory, fake_clock, anna, parcel):
    """A cascade still waiting when its TTL passes ends `expired`, attempts abandoned."""
    notifier = await notifier_factory(chain(wa="no_receipt", ttl="90s"))
    delivery = await run(notifier, fake_clock, anna, parcel)
    assert delivery.status is DeliveryStatus.EXPIRED
    assert delivery.finished_ts == delivery.created_ts + 90
    assert trail(delivery) == [("wa", "abandoned")]


async def test_late_success_stops_the_rest(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """A delivered receipt after the cascade moved on ends it delivered on that channel."""
    policy = chain(wa="no_receipt", tg="fail", sms="no_receipt")
    notifier = await notifier_factory(policy)
    delivery = await notifier.send(anna, parcel)
    await fake_clock.advance(130)  # WhatsApp timed out; SMS is waiting
    moved_on = await notifier.get(delivery.id)
    assert [a.provider for a in moved_on.attempts] == ["wa", "tg", "sms"]
    wa_message = moved_on.attempts[0].provider_message_id
    assert wa_message is not None
    await notifier.record_receipts(
        [
            Receipt(
                provider="wa",
                provider_message_id=wa_message,
                status=ReceiptStatus.DELIVERED,
                ts=fake_clock.now(),
            )
        ]
    )
    [final] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert final.status is DeliveryStatus.DELIVERED
    assert final.channel == "whatsapp"
    assert trail(final) == [("wa", "delivered"), ("tg", "failed"), ("sms", "abandoned")]
    assert fake(notifier, "call").calls == []


async def test_duplicate_receipts_count_once(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """The same receipt delivered three times is recorded once."""
    notifier = await notifier_factory(chain(wa="no_receipt"))
    delivery = await notifier.send(anna, parcel)
    await fake_clock.advance(1)
    message_id = (await notifier.get(delivery.id)).attempts[0].provider_message_id
    assert message_id is not None
    receipt = Receipt(
        provider="wa",
        provider_message_id=message_id,
        status=ReceiptStatus.DELIVERED,
        ts=fake_clock.now(),
    )
    results = [await notifier.record_receipts([receipt]) for _ in range(3)]
    assert [r[0].duplicate for r in results] == [False, True, True]
    [final] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert len(final.attempts[0].receipts) == 1


async def test_read_before_delivered_keeps_history(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """`read` may arrive before `delivered`: status stays read, both are kept in order heard."""
    notifier = await notifier_factory(chain(wa="no_receipt"))
    delivery = await notifier.send(anna, parcel)
    await fake_clock.advance(1)
    message_id = (await notifier.get(delivery.id)).attempts[0].provider_message_id
    assert message_id is not None
    for status in (ReceiptStatus.READ, ReceiptStatus.DELIVERED):
        await notifier.record_receipts(
            [
                Receipt(
                    provider="wa",
                    provider_message_id=message_id,
                    status=status,
                    ts=fake_clock.now(),
                )
            ]
        )
    [final] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert final.attempts[0].status is AttemptStatus.READ
    assert [r.status.value for r in final.attempts[0].receipts] == ["read", "delivered"]


async def test_receipt_before_send_answer_is_kept(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """A receipt that beats the provider's own answer is kept and attached when it comes."""
    notifier = await notifier_factory(chain().replace("receipt_delay: 5s", "latency: 2s"))
    delivery = await notifier.send(anna, parcel)
    await fake_clock.settle()
    # report on the fake's first message while its send is still in flight
    results = await notifier.record_receipts(
        [
            Receipt(
                provider="wa",
                provider_message_id=fake(notifier, "wa").next_message_id,
                status=ReceiptStatus.DELIVERED,
                ts=fake_clock.now(),
            )
        ]
    )
    assert results[0].delivery_id is None
    [final] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert final.status is DeliveryStatus.DELIVERED
    assert final.finished_ts == final.created_ts + 2


async def test_idempotency_key_returns_same_delivery(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """Sending twice with one idempotency key gives one delivery and one provider call."""
    notifier = await notifier_factory(chain())
    first = await notifier.send(anna, parcel, idempotency_key="order-42")
    second = await notifier.send(anna, parcel, idempotency_key="order-42")
    assert first.id == second.id
    await run_until_final(notifier, fake_clock, [first.id])
    third = await notifier.send(anna, parcel, idempotency_key="order-42")
    assert third.id == first.id and third.status is DeliveryStatus.DELIVERED
    assert len(fake(notifier, "wa").calls) == 1


async def test_cancel_stops_the_cascade(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """A cancelled delivery sends nothing more; cancelling a final one changes nothing."""
    notifier = await notifier_factory(chain(wa="no_receipt"))
    delivery = await notifier.send(anna, parcel)
    await fake_clock.advance(10)
    cancelled = await notifier.cancel(delivery.id)
    assert cancelled.status is DeliveryStatus.CANCELLED
    assert trail(cancelled) == [("wa", "abandoned")]
    await fake_clock.advance(3600)
    assert fake(notifier, "tg").calls == []
    again = await notifier.cancel(delivery.id)
    assert again.status is DeliveryStatus.CANCELLED and again.finished_ts == cancelled.finished_ts


async def test_unknown_outcome_is_not_resent(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """A send whose answer was lost is not repeated; its late receipt still counts."""
    notifier = await notifier_factory(chain(wa="unknown"))
    delivery = await run(notifier, fake_clock, anna, parcel)
    assert trail(delivery) == [("wa", "delivered")]
    assert len(fake(notifier, "wa").calls) == 1


async def test_unknown_outcome_without_receipt_moves_on_at_deadline(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """An unknown outcome with no receipt waits out the step's deadline, then moves on."""
    notifier = await notifier_factory(
        chain(wa="unknown").replace("receipt_delay: 5s", "receipt_delay: 1h")
    )
    delivery = await run(notifier, fake_clock, anna, parcel)
    assert trail(delivery)[:2] == [("wa", "timed_out"), ("tg", "accepted")]
    assert delivery.attempts[1].started_ts == delivery.created_ts + 120
    assert len(fake(notifier, "wa").calls) == 1


async def test_exhausted_when_every_step_fails(
    notifier_factory: NotifierFactory, fake_clock, parcel
):
    """With no step left the cascade ends `exhausted`, every attempt on record."""
    notifier = await notifier_factory(chain(wa="unreachable", tg="fail", sms="fail"))
    bob = Recipient(id="bob", whatsapp="+79161234567", telegram="5", sms="+79161234567")
    delivery = await run(notifier, fake_clock, bob, parcel)
    assert delivery.status is DeliveryStatus.EXHAUSTED
    assert delivery.channel is None
    assert trail(delivery) == [("wa", "unreachable"), ("tg", "failed"), ("sms", "failed")]
    assert [s.channel for s in delivery.skipped] == ["call"]


async def test_the_last_steps_deadline_is_a_timeout_with_its_reason(
    notifier_factory: NotifierFactory, fake_clock, parcel
):
    """No receipt by the last step's deadline: its attempt is `timed_out` with the
    reason, as an earlier step's is, and the cascade ends `exhausted`."""
    notifier = await notifier_factory(chain(wa="no_receipt", sms="no_receipt"))
    cid = Recipient(id="cid", whatsapp="+79161234567", sms="+79161234567")
    delivery = await run(notifier, fake_clock, cid, parcel)
    assert delivery.status is DeliveryStatus.EXHAUSTED
    assert [(a.provider, a.status.value, a.error) for a in delivery.attempts] == [
        ("wa", "timed_out", "no delivered receipt in time"),
        ("sms", "timed_out", "no delivered receipt in time"),
    ]
    assert delivery.finished_ts == delivery.created_ts + 120 + 300


async def test_wait_returns_final_or_times_out(
    notifier_factory: NotifierFactory, fake_clock, anna, parcel
):
    """wait() returns the final delivery, and raises WaitTimeout when time runs out first."""
    notifier = await notifier_factory(chain(wa="no_receipt"))
    delivery = await notifier.send(anna, parcel)
    import asyncio

    waiter = asyncio.ensure_future(notifier.wait(delivery.id, timeout=30))
    await fake_clock.advance(31)
    with pytest.raises(WaitTimeout):
        await waiter
    waiter = asyncio.ensure_future(notifier.wait(delivery.id))
    await fake_clock.advance(200)
    final = await waiter
    assert final.status is DeliveryStatus.DELIVERED and final.channel == "telegram"


async def test_unknown_delivery_id(notifier_factory: NotifierFactory):
    """get, wait and cancel of an id that does not exist raise DeliveryNotFound."""
    notifier = await notifier_factory(chain())
    for verb in (notifier.get, notifier.wait, notifier.cancel):
        with pytest.raises(DeliveryNotFound, match="nope"):
            await verb("nope")


async def test_unknown_policy_name_is_refused(notifier_factory: NotifierFactory, anna, parcel):
    """Sending on a policy that does not exist fails before anything is stored or sent."""
    notifier = await notifier_factory(chain())
    with pytest.raises(Exception, match="unknown policy 'vip'; this notifier has: service"):
        await notifier.send(anna, parcel, policy="vip")
    assert fake(notifier, "wa").calls == []


async def test_send_before_start_is_a_clear_error(anna, parcel):
    """Using a notifier outside `async with` says so."""
    notifier = Notifier.from_yaml(chain())
    with pytest.raises(Exception, match="not running"):
        await notifier.send(anna, parcel)


async def test_no_send_once_the_lease_ran_out(fake_clock: FakeClock, anna, parcel) -> None:
    """A worker paused past its lease while writing the intent to send does not send: a
    successor may hold the delivery by then, and reads the intent as an unknown outcome."""
    from cascade_notify.stores.base import Claim, Transition
    from cascade_notify.stores.memory import MemoryStore

    class SlowIntent(MemoryStore):
        async def commit(self, claim: Claim, transition: Transition) -> None:
            await super().commit(claim, transition)
            if not transition.release:  # the intent: the worker stalls right after it
                fake_clock._now = claim.lease_until

    notifier = Notifier.from_yaml(chain(), clock=fake_clock, store=SlowIntent())
    async with notifier:
        delivery = await notifier.send(anna, parcel)
        await fake_clock.advance(1)
        assert fake(notifier, "wa").calls == []
        # the next lease holder (here the same worker) finds the intent and waits for a
        # receipt instead of sending again
        stored = await notifier.get(delivery.id)
        assert trail(stored) == [("wa", "unknown")]
