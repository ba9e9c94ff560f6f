"""The Store contract for scheduled deliveries, priorities and batches of new deliveries:
memory, SQLite and PostgreSQL pass every test here."""

from __future__ import annotations

from cascade_notify.models import Delivery, DeliveryStatus, Priority
from cascade_notify.stores import Batching, Rescheduling, Store
from cascade_notify.stores.base import Transition

from .conftest import LEASE, NOW, StoreFactory, delivery, durable


def scheduled(start: float, key: str | None = None, **kwargs: object) -> Delivery:
    """A delivery scheduled to start at `start`, expiring a day after."""
    d = delivery(key, **kwargs)
    d.status = DeliveryStatus.SCHEDULED
    d.wake_ts, d.expires_ts = start, start + 86400
    return d


async def claimed(store: Store, now: float, limit: int = 10) -> list[str]:
    return [c.delivery.id for c in await store.claim(now, limit=limit, lease=LEASE)]


async def test_a_scheduled_delivery_is_due_at_its_start_and_not_before(store: Store) -> None:
    """Stored as `scheduled`, it is not claimed before its start; claimed then, it is
    `pending` (started), and `next_wake` says when it starts."""
    d, created = await store.create(scheduled(NOW + 3600))
    assert created and d.status is DeliveryStatus.SCHEDULED
    stored = await store.get(d.id)
    assert stored is not None and stored.status is DeliveryStatus.SCHEDULED
    assert stored.wake_ts == NOW + 3600 and not stored.final
    assert await claimed(store, NOW) == []
    assert await claimed(store, NOW + 3599) == []
    assert await store.next_wake() == NOW + 3600
    [claim] = await store.claim(NOW + 3600, limit=10, lease=LEASE)
    assert claim.delivery.id == d.id and claim.delivery.status is DeliveryStatus.PENDING
    after = await store.get(d.id)
    assert after is not None and after.status is DeliveryStatus.PENDING


async def test_a_scheduled_delivery_can_be_cancelled(store: Store) -> None:
    """Cancelled before its start, it is final and never claimed."""
    d, _ = await store.create(scheduled(NOW + 60))
    cancelled = await store.cancel(d.id, NOW + 1)
    assert cancelled is not None and cancelled.status is DeliveryStatus.CANCELLED
    assert await claimed(store, NOW + 120) == []
    assert await store.next_wake() is None


async def test_reschedule_moves_the_start_and_the_expiry(store: Store) -> None:
    """A later start: not due at the old one, due at the new; the expiry moves as much."""
    assert isinstance(store, Rescheduling)
    d, _ = await store.create(scheduled(NOW + 60))
    moved = await store.reschedule(d.id, NOW + 600)
    assert moved is not None and moved.status is DeliveryStatus.SCHEDULED
    assert (moved.wake_ts, moved.expires_ts) == (NOW + 600, NOW + 600 + 86400)
    assert await claimed(store, NOW + 60) == []
    assert await claimed(store, NOW + 600) == [d.id]


async def test_reschedule_earlier_makes_it_due_sooner(store: Store) -> None:
    assert isinstance(store, Rescheduling)
    d, _ = await store.create(scheduled(NOW + 600))
    await store.reschedule(d.id, NOW + 10)
    assert await store.next_wake() == NOW + 10
    assert await claimed(store, NOW + 10) == [d.id]


async def test_reschedule_leaves_a_started_delivery_as_it_is(store: Store) -> None:
    """Once claimed (started), reschedule changes nothing; unknown ids are None."""
    assert isinstance(store, Rescheduling)
    d, _ = await store.create(scheduled(NOW))
    [claim] = await store.claim(NOW, limit=1, lease=LEASE)
    await store.commit(claim, Transition(wake_ts=NOW + 100))
    left = await store.reschedule(d.id, NOW + 5000)
    assert left is not None and left.status is DeliveryStatus.PENDING
    assert left.wake_ts == NOW + 100
    assert await store.reschedule("no-such-id", NOW) is None


async def test_claims_take_higher_priorities_first(store: Store) -> None:
    """Due deliveries are claimed high, then normal, then bulk, whatever the order they
    were made in; a claim's limit takes the highest first."""
    bulk = [(await store.create(delivery(priority=Priority.BULK)))[0] for _ in range(3)]
    normal, _ = await store.create(delivery())
    high, _ = await store.create(delivery(priority=Priority.HIGH))
    assert (await store.get(high.id)).priority is Priority.HIGH  # type: ignore[union-attr]
    assert await claimed(store, NOW, limit=2) == [high.id, normal.id]
    assert set(await claimed(store, NOW, limit=10)) == {b.id for b in bulk}


async def test_a_high_delivery_is_claimed_before_a_bulk_backlog(store: Store) -> None:
    """Hundreds of bulk deliveries due (sent, on timers, scheduled): a high one made
    after them all is in the next claim, first."""
    items = [delivery(priority=Priority.BULK) for _ in range(200)]
    items += [scheduled(NOW - 1, priority=Priority.BULK) for _ in range(50)]
    assert isinstance(store, Batching)
    await store.create_many(items)
    for claim in await store.claim(NOW, limit=100, lease=LEASE):
        await store.commit(claim, Transition(wake_ts=NOW))  # waiting on a timer, due
    high, _ = await store.create(delivery(priority=Priority.HIGH))
    assert (await claimed(store, NOW + 1, limit=5))[0] == high.id


async def test_a_due_scheduled_high_delivery_comes_before_normal_ones(store: Store) -> None:
    normal, _ = await store.create(delivery())
    high, _ = await store.create(scheduled(NOW + 5, priority=Priority.HIGH))
    assert await claimed(store, NOW + 5, limit=1) == [high.id]
    assert await claimed(store, NOW + 5, limit=1) == [normal.id]


async def test_create_many_writes_each_in_order_and_honours_keys(store: Store) -> None:
    """A batch: each item created or found by its key (also a key used twice in the batch,
    and one known before), answered in order."""
    assert isinstance(store, Batching)
    known, _ = await store.create(delivery("k-known"))
    items = [delivery("k-1"), delivery(), delivery("k-1"), delivery("k-known"), delivery()]
    answers = await store.create_many(items)
    assert len(answers) == 5
    assert all(not isinstance(a, Exception) for a in answers)
    pairs = [a for a in answers if not isinstance(a, Exception)]
    assert [created for _, created in pairs] == [True, True, False, False, True]
    assert pairs[2][0].id == items[0].id and pairs[3][0].id == known.id
    for d, _ in pairs:
        assert await store.get(d.id) is not None
    assert len(await store.claim(NOW, limit=100, lease=LEASE)) == 4


async def test_create_many_of_nothing_is_nothing(store: Store) -> None:
    assert isinstance(store, Batching)
    assert await store.create_many([]) == []


async def test_create_many_keeps_scheduled_ones_waiting(store: Store) -> None:
    assert isinstance(store, Batching)
    now_one, later = delivery(), scheduled(NOW + 100)
    await store.create_many([now_one, later])
    [claim] = await store.claim(NOW, limit=10, lease=LEASE)
    assert claim.delivery.id == now_one.id
    await store.commit(claim, Transition(wake_ts=NOW + 1000))
    assert await claimed(store, NOW + 100) == [later.id]


async def test_a_scheduled_delivery_survives_reopening(
    store: Store, store_factory: StoreFactory
) -> None:
    """Scheduled, priority and start are on disk: after a reopen it is still scheduled,
    and due at its start, not before."""
    durable(store)
    d, _ = await store.create(scheduled(NOW + 7200, priority=Priority.BULK))
    await store.close()
    reopened = store_factory()
    await reopened.open()
    try:
        again = await reopened.get(d.id)
        assert again is not None
        assert (again.status, again.priority, again.wake_ts) == (
            DeliveryStatus.SCHEDULED,
            Priority.BULK,
            NOW + 7200,
        )
        assert await claimed(reopened, NOW + 7199) == []
        assert await claimed(reopened, NOW + 7200) == [d.id]
    finally:
        await reopened.close()
        await store.open()  # the fixture closes it
