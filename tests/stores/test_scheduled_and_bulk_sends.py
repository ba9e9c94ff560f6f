"""`send(at=)`, `reschedule`, `send_many` and priorities through the Notifier, on every
store, on fake time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from cascade_notify import (
    BatchItemError,
    DeliveryStatus,
    Message,
    MessageError,
    Notifier,
    Priority,
    Recipient,
    ScheduleError,
    Send,
)
from cascade_notify.testing import FakeClock, run_until_final

from .conftest import StoreFactory, durable

POLICY = """
providers:
  sms: {type: fake, channel: sms}
  mail: {type: fake, channel: email, latency: 2s}
policies:
  service:
    ttl: 1h
    steps:
      - {channel: sms, providers: [sms], wait_for: accepted}
  night:
    ttl: 1h
    respect_quiet_hours: true
    steps:
      - {channel: sms, providers: [sms], wait_for: accepted,
         quiet_hours: {start: "22:00", end: "08:00"}}
  codes:
    priority: high
    steps:
      - {channel: email, providers: [mail], wait_for: accepted}
  mailing:
    priority: bulk
    steps:
      - {channel: email, providers: [mail], wait_for: accepted}
default_policy: service
worker: {concurrency: 4, batch: 4}
"""

ANNA = Recipient(id="anna", sms="+79161234567", email="anna@example.com")
TEXT = Message(text="Your appointment is tomorrow at 10:00.")


def person(i: int) -> Recipient:
    return Recipient(id=f"c{i}", sms=f"+7916{1_000_000 + i}", email=f"c{i}@example.com")


def when(clock: FakeClock, seconds: float) -> datetime:
    return datetime.fromtimestamp(clock.now() + seconds, UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def notifier(store_factory: StoreFactory, clock: FakeClock) -> AsyncIterator[Notifier]:
    running = Notifier.from_yaml(POLICY, clock=clock, store=store_factory())
    async with running:
        yield running


# scheduled sends


async def test_a_scheduled_send_starts_at_its_time_and_not_before(
    notifier: Notifier, clock: FakeClock
) -> None:
    """`scheduled` until `at`, nothing sent; at `at` the cascade starts; the TTL counts
    from the start."""
    start = clock.now() + 7200
    sent = await notifier.send(ANNA, TEXT, at=when(clock, 7200))
    assert sent.status is DeliveryStatus.SCHEDULED
    assert sent.scheduled_at == datetime.fromtimestamp(start, UTC)
    assert sent.expires_ts == start + 3600
    await clock.advance(7199)
    waiting = await notifier.get(sent.id)
    assert waiting.status is DeliveryStatus.SCHEDULED and waiting.attempts == []
    await clock.advance(1)
    [done] = await run_until_final(notifier, clock, [sent.id])
    assert done.status is DeliveryStatus.DELIVERED
    assert done.attempts[0].started_ts == start


async def test_a_naive_time_is_refused_and_nothing_is_stored(notifier: Notifier) -> None:
    with pytest.raises(ScheduleError, match="no time zone"):
        await notifier.send(ANNA, TEXT, at=datetime(2026, 1, 2, 9, 0))
    with pytest.raises(ScheduleError, match="must be a datetime"):
        await notifier.send(ANNA, TEXT, at="tomorrow")  # type: ignore[arg-type]


async def test_a_scheduled_send_can_be_cancelled(notifier: Notifier, clock: FakeClock) -> None:
    sent = await notifier.send(ANNA, TEXT, at=when(clock, 600))
    cancelled = await notifier.cancel(sent.id)
    assert cancelled.status is DeliveryStatus.CANCELLED
    await clock.advance(1200)
    after = await notifier.get(sent.id)
    assert after.status is DeliveryStatus.CANCELLED and after.attempts == []


async def test_reschedule_moves_the_start_and_the_ttl(notifier: Notifier, clock: FakeClock) -> None:
    """Moved later: nothing at the old time, the start at the new one, the TTL with it."""
    sent = await notifier.send(ANNA, TEXT, at=when(clock, 600))
    moved = await notifier.reschedule(sent.id, when(clock, 3600))
    assert moved.status is DeliveryStatus.SCHEDULED
    assert moved.expires_ts == sent.expires_ts + 3000
    await clock.advance(1200)
    assert (await notifier.get(sent.id)).attempts == []
    [done] = await run_until_final(notifier, clock, [sent.id])
    assert done.attempts[0].started_ts == moved.wake_ts


async def test_a_started_delivery_cannot_be_rescheduled(
    notifier: Notifier, clock: FakeClock
) -> None:
    sent = await notifier.send(ANNA, TEXT)
    await run_until_final(notifier, clock, [sent.id])
    with pytest.raises(ScheduleError, match="only a scheduled delivery"):
        await notifier.reschedule(sent.id, when(clock, 60))


async def test_a_send_scheduled_in_quiet_hours_waits_for_their_end(
    notifier: Notifier, clock: FakeClock
) -> None:
    """`respect_quiet_hours: true`: 23:00 (UTC, the recipient's zone) starts at 08:00."""
    at = datetime(2026, 1, 1, 23, 0, tzinfo=UTC)
    sent = await notifier.send(ANNA, TEXT, policy="night", at=at)
    assert sent.scheduled_at == datetime(2026, 1, 2, 8, 0, tzinfo=UTC)
    assert sent.expires_at == datetime(2026, 1, 2, 9, 0, tzinfo=UTC)
    plain = await notifier.send(ANNA, TEXT, at=at)  # the policy without it: as given
    assert plain.scheduled_at == at


async def test_a_scheduled_delivery_survives_a_restart(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    """Close the notifier (and its store), open another on the same store: it starts the
    delivery at its time, not before."""
    first = Notifier.from_yaml(POLICY, clock=clock, store=store_factory())
    async with first:
        durable(first.store)
        sent = await first.send(ANNA, TEXT, at=when(clock, 3600))
    await clock.advance(1800)
    second = Notifier.from_yaml(POLICY, clock=clock, store=store_factory())
    async with second:
        assert (await second.get(sent.id)).status is DeliveryStatus.SCHEDULED
        await clock.advance(1799)
        assert (await second.get(sent.id)).attempts == []
        [done] = await run_until_final(second, clock, [sent.id])
    assert done.status is DeliveryStatus.DELIVERED
    assert done.attempts[0].started_ts == sent.wake_ts


# send_many


async def test_send_many_stores_the_good_items_and_reports_the_bad_by_index(
    notifier: Notifier, clock: FakeClock
) -> None:
    """A bad item in the middle (not a pair, a bad key, an unknown policy) is reported with
    its index and why; every other item is stored, in order."""
    items: list[object] = [
        (person(0), TEXT),
        Send(person(1), TEXT, idempotency_key="k-1"),
        ("not", "a pair"),
        Send(person(3), TEXT, idempotency_key=""),
        Send(person(4), TEXT, policy="no-such-policy"),
        (person(5), TEXT),
    ]
    result = await notifier.send_many(items, batch=2)  # type: ignore[arg-type]
    assert not result.ok and result.stopped is None
    assert [f.index for f in result.failures] == [2, 3, 4]
    assert isinstance(result.failures[0].error, BatchItemError)
    assert isinstance(result.failures[1].error, MessageError)
    assert "no-such-policy" in str(result.failures[2].error)
    assert [d is not None for d in result.deliveries] == [True, True, False, False, False, True]
    assert result.created == result.stored == 3
    for index, delivery in enumerate(result.deliveries):
        if delivery is not None:
            assert (await notifier.get(delivery.id)).recipient.id == f"c{index}"
    ids = [d.id for d in result.deliveries if d is not None]
    done = await run_until_final(notifier, clock, ids)
    assert all(d.status is DeliveryStatus.DELIVERED for d in done)


async def test_send_many_honours_idempotency_keys_within_and_across_batches(
    notifier: Notifier,
) -> None:
    """A key used twice in one batch makes one delivery; the same batch run again makes
    none, and answers with the same deliveries."""
    items = [Send(person(i % 3), TEXT, idempotency_key=f"k-{i % 3}") for i in range(7)]
    first = await notifier.send_many(items, batch=4)
    assert first.ok and first.created == 3
    ids = [d.id for d in first.deliveries if d is not None]
    assert ids[:3] == ids[3:6] and ids[6] == ids[0] and len(set(ids)) == 3
    again = await notifier.send_many(iter(items), batch=3)
    assert again.ok and again.created == 0
    assert [d.id for d in again.deliveries if d is not None] == ids


async def test_send_many_takes_an_async_iterable_and_applies_its_defaults(
    notifier: Notifier, clock: FakeClock
) -> None:
    """Items from an async generator; `at` and `priority` for those that say nothing."""

    async def items() -> AsyncIterator[Send | tuple[Recipient, Message]]:
        for i in range(5):
            yield (person(i), TEXT)
        yield Send(person(9), TEXT, priority="high", at=when(clock, 10))

    seen: list[int] = []
    result = await notifier.send_many(
        items(), at=when(clock, 60), priority=Priority.BULK, batch=2, progress=seen.append
    )
    assert result.ok and seen[-1] == 6 and seen == sorted(seen)
    made = [d for d in result.deliveries if d is not None]
    assert all(d.status is DeliveryStatus.SCHEDULED for d in made)
    assert [d.priority for d in made] == [Priority.BULK] * 5 + [Priority.HIGH]
    assert made[-1].wake_ts == clock.now() + 10 and made[0].wake_ts == clock.now() + 60


async def test_an_unknown_priority_is_refused(notifier: Notifier) -> None:
    with pytest.raises(Exception, match="unknown priority 'urgent'"):
        await notifier.send(ANNA, TEXT, priority="urgent")


# priorities


async def test_a_high_send_during_a_bulk_run_starts_within_one_claim(
    notifier: Notifier, clock: FakeClock
) -> None:
    """Every worker slot busy with a bulk mailing (each send takes 2 s): a one-time code
    sent meanwhile starts as soon as one slot frees, before the 200 bulk still due."""
    mailing = await notifier.send_many([(person(i), TEXT) for i in range(200)], policy="mailing")
    assert mailing.ok
    await clock.advance(1)  # the four slots are all in a 2-second send
    code = await notifier.send(ANNA, Message(text="Your code: 4711"), policy="codes")
    assert code.priority is Priority.HIGH
    sent_at = clock.now()
    [done] = await run_until_final(notifier, clock, [code.id])
    started = done.attempts[0].started_ts
    assert started - sent_at <= 1.0  # one bulk send's remaining second, no more
    bulk = await run_until_final(notifier, clock, [d.id for d in mailing.deliveries if d])
    later = sum(1 for d in bulk if d.attempts[0].started_ts > started)
    assert later >= 190
