"""Driving a notifier on fake time."""

from __future__ import annotations

from collections.abc import Iterable

from cascade_notify.models import Delivery
from cascade_notify.notifier import Notifier
from cascade_notify.testing.clock import FakeClock


async def run_until_final(
    notifier: Notifier, clock: FakeClock, delivery_ids: Iterable[str], *, limit: float = 7 * 86400
) -> list[Delivery]:
    """Advance `clock` timer by timer until every delivery is final (or `limit` seconds pass);
    return them in the order given."""
    ids = list(dict.fromkeys(delivery_ids))
    final: dict[str, Delivery] = {}

    async def check() -> bool:
        for delivery_id in ids:
            if delivery_id not in final:
                delivery = await notifier.get(delivery_id)
                if not delivery.final:
                    return False
                final[delivery_id] = delivery
        return True

    end = clock.now() + limit
    await clock.settle()
    while not await check():
        nxt = clock.next_timer()
        if nxt is None or nxt > end:
            break
        await clock.advance(max(0.0, nxt - clock.now()))
    return [final.get(i) or await notifier.get(i) for i in ids]
