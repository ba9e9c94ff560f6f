"""A Notifier runs whole cascades on each store, on fake time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cascade_notify import DeliveryStatus, Message, Notifier, Recipient
from cascade_notify.stores.sqlite import SQLiteStore
from cascade_notify.testing import FakeClock, run_until_final

from .conftest import StoreFactory

POLICY = """
providers:
  wa:  {type: fake, channel: whatsapp, behavior: down}
  tg:  {type: fake, channel: telegram, behavior: unreachable}
  vb:  {type: fake, channel: viber, behavior: deliver, receipt_delay: 30s}
  sms: {type: fake, channel: sms, overrides: {boris: fail_receipt}}
policies:
  service:
    ttl: 1h
    steps:
      - {channel: whatsapp, providers: [wa], timeout: 2m}
      - {channel: telegram, providers: [tg], wait_for: accepted}
      - {channel: viber, providers: [vb], timeout: 5m}
      - {channel: sms, providers: [sms]}
"""

ANNA = Recipient(id="anna", whatsapp="+79161234567", telegram="123", viber="v1", sms="+79161234567")
BORIS = Recipient(id="boris", sms="+79161234568")


def trail(delivery) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(a.provider, a.status.value) for a in delivery.attempts]


async def start(store_factory: StoreFactory, clock: FakeClock) -> Notifier:
    notifier = Notifier.from_yaml(POLICY, clock=clock, store=store_factory())
    await notifier.start()
    return notifier


async def test_cascade_runs_to_the_end_on_every_store(store_factory: StoreFactory) -> None:
    """Outage, unreachable recipient, delivery receipt: the same cascade on every store."""
    clock = FakeClock()
    notifier = await start(store_factory, clock)
    try:
        anna = await notifier.send(ANNA, Message(text="Your parcel has arrived."))
        boris = await notifier.send(BORIS, Message(text="Your parcel has arrived."))
        done_anna, done_boris = await run_until_final(notifier, clock, [anna.id, boris.id])
    finally:
        await notifier.stop()
    assert done_anna.status is DeliveryStatus.DELIVERED and done_anna.channel == "viber"
    assert trail(done_anna) == [("wa", "transient")] * 3 + [
        ("tg", "unreachable"),
        ("vb", "delivered"),
    ]
    assert done_anna.finished_ts is not None
    assert done_boris.status is DeliveryStatus.EXHAUSTED
    assert trail(done_boris) == [("sms", "failed")]
    assert [s.reason for s in done_boris.skipped] == ["no_address"] * 3


async def test_many_deliveries_all_finish(store_factory: StoreFactory) -> None:
    """Fifty cascades side by side (to fifty numbers, under the SMS brakes) all end,
    each delivered by exactly one SMS."""
    clock = FakeClock()
    notifier = await start(store_factory, clock)
    try:
        sent = [
            await notifier.send(
                Recipient(id=f"c{i % 50}", sms=f"+7916{1_000_000 + i % 50}"),
                Message(text=f"n{i % 50}"),
                idempotency_key=f"k{i % 50}",
            )
            for i in range(60)
        ]
        ids = list(dict.fromkeys(d.id for d in sent))
        done = await run_until_final(notifier, clock, ids)
    finally:
        await notifier.stop()
    assert len(ids) == 50
    assert all(trail(d) == [("sms", "delivered")] for d in done), [trail(d) for d in done]


@pytest.fixture(params=["sqlite", "postgres"])
def shared_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes store objects on one shared database, as separate processes would have."""
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "shared.db")
    from cascade_notify.stores.postgres import PostgresStore

    dsn = request.getfixturevalue("pg_dsn")
    schema = request.getfixturevalue("pg_schema")
    return lambda: PostgresStore(dsn, schema=schema)


async def test_worker_picks_up_what_a_send_only_notifier_sent(
    shared_factory: StoreFactory,
) -> None:
    """A web app's send-only notifier and a worker elsewhere share the store: the worker
    starts a new delivery within a second, even while its own next timer is minutes away."""
    policy = POLICY.replace("behavior: down", "behavior: no_receipt")
    clock = FakeClock()
    worker = Notifier.from_yaml(policy, clock=clock, store=shared_factory())
    web = Notifier.from_yaml(policy, clock=clock, store=shared_factory(), worker=False)
    await worker.start()
    await web.start()
    try:
        first = await web.send(ANNA, Message(text="one"))
        await clock.advance(1.5)
        assert len((await web.get(first.id)).attempts) == 1  # sent; waits 2 minutes now
        second = await web.send(ANNA, Message(text="two"))
        await clock.advance(1.5)
        assert len((await web.get(second.id)).attempts) == 1
    finally:
        await web.stop()
        await worker.stop()


async def test_a_worker_takes_a_web_process_send_at_once(
    shared_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send from a send-only notifier (a web process) wakes a worker in another notifier
    at once: with the worker's poll stretched to an hour, the delivery still ends in
    seconds, because the store tells the worker (LISTEN/NOTIFY; inotify on SQLite)."""
    from cascade_notify import notifier as notifier_module
    from cascade_notify import worker as worker_module

    monkeypatch.setattr(notifier_module, "POLL_INTERVAL", 3600.0)
    monkeypatch.setattr(worker_module, "POLL_INTERVAL", 3600.0)
    policy = """
providers:
  wa: {type: fake, channel: whatsapp, behavior: deliver}
policies:
  p: {steps: [{channel: whatsapp, providers: [wa]}]}
"""
    worker = Notifier.from_yaml(policy, store=shared_factory())
    web = Notifier.from_yaml(policy, store=shared_factory(), worker=False)
    finished = asyncio.Event()
    worker.subscribe(lambda event: event.kind == "finished" and finished.set())
    async with worker, web:
        await asyncio.sleep(0.2)  # the worker found nothing due and parked for its hour
        sent = await web.send(ANNA, Message(text="Your code is 1234"))
        await asyncio.wait_for(finished.wait(), 10)
        assert (await web.get(sent.id)).status is DeliveryStatus.DELIVERED
