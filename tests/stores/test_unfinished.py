"""`unfinished()`: the count behind the `deliveries_unfinished` gauge, on every store."""

from __future__ import annotations

from cascade_notify.models import DeliveryStatus
from cascade_notify.stores import Counting
from cascade_notify.stores.base import Store, Transition

from .conftest import NOW, delivery


async def test_unfinished_counts_scheduled_and_pending_only(store: Store) -> None:
    """Pending and scheduled deliveries are counted by status; a finished one is not."""
    assert isinstance(store, Counting)
    assert await store.unfinished() == {"scheduled": 0, "pending": 0}
    for _ in range(3):
        await store.create(delivery())
    await store.create(delivery(status=DeliveryStatus.SCHEDULED))
    [claim] = await store.claim(NOW, limit=1, lease=30)
    done = Transition(status=DeliveryStatus.DELIVERED, channel="sms", finished_ts=NOW)
    await store.commit(claim, done)
    assert await store.unfinished() == {"scheduled": 1, "pending": 2}
