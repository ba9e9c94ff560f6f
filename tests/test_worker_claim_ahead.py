"""The worker claims ahead of its slots: ready claims wait beside the ones in hand, start
in the next freed slot, and are handed back to the store when the worker stops."""

from __future__ import annotations

import asyncio
import json

from cascade_notify import Message, Notifier, Recipient
from cascade_notify.testing import FakeClock

POLICY = {
    "worker": {"concurrency": 2, "batch": 10},
    "providers": {"slow": {"type": "fake", "channel": "sms", "latency": "10s"}},
    "policies": {"p": {"steps": [{"channel": "sms", "providers": ["slow"]}]}},
}


async def test_ready_claims_are_handed_back_due_at_once_on_stop(fake_clock: FakeClock) -> None:
    notifier = Notifier.from_yaml(json.dumps(POLICY), clock=fake_clock, store="memory://")
    await notifier.start()
    sent = [
        await notifier.send(Recipient(id=f"u{i}", sms=f"+7916000000{i}"), Message(text="Hi"))
        for i in range(6)
    ]
    await fake_clock.advance(1)  # two in hand (a 10 s send each), two claimed ahead
    store = notifier.store
    stopping = asyncio.ensure_future(notifier.stop())
    while not stopping.done():
        await fake_clock.advance(1)  # the two sends in hand finish
    await stopping
    # the two ready ones and the two never claimed are due now, not held for 30 s
    again = {c.delivery.id for c in await store.claim(fake_clock.now(), limit=10, lease=30)}
    in_hand = {d.id for d in [await store.get(d.id) for d in sent] if d and d.attempts}
    assert len(in_hand) == 2
    assert again >= {d.id for d in sent} - in_hand
