"""Outcome webhooks through the public API, on every store: signed, in order per
delivery, retried through a receiver's 503s on fake time, taken over from a dead sender."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cascade_notify import DeliveryStatus, Message, Notifier, PolicyError, Recipient
from cascade_notify.stores import open_store
from cascade_notify.testing import FakeClock

from .outbox_receiver import Receiver, check_arrivals, receiving

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
POLICY = """
store: {store}
events: {{url: "{url}", secret: "{secret}"{kinds}}}
providers:
  wa:  {{type: fake, channel: whatsapp, behavior: fail_receipt, receipt_delay: 5s}}
  tg:  {{type: fake, channel: telegram}}
  sms: {{type: fake, channel: sms, behavior: deliver, receipt_delay: 10s}}
policies:
  p:
    ttl: 1h
    steps:
      - {{channel: whatsapp, providers: [wa], timeout: 2m}}
      - {{channel: telegram, providers: [tg], wait_for: accepted}}
      - {{channel: sms, providers: [sms], timeout: 5m}}
"""
WHO = Recipient(id="r1", whatsapp="+79161234567", sms="+79161234567")
#: What one cascade tells, in order: WhatsApp accepted and its failed receipt, Telegram
#: skipped (no chat id), SMS accepted and its delivered receipt, the end.
EXPECTED = [
    ("delivery.attempt", "accepted"),
    ("delivery.receipt", "failed"),
    ("delivery.skipped", "no_address"),
    ("delivery.attempt", "accepted"),
    ("delivery.receipt", "delivered"),
    ("delivery.finished", "delivered"),
]


@pytest.fixture(params=["memory", "sqlite", "postgres", "postgres-unprepared"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/outbox.db"
    dsn = request.getfixturevalue("pg_dsn")
    url = f"{dsn}?schema={request.getfixturevalue('pg_schema')}"
    # unprepared: the statement-by-statement path (PgBouncer in transaction mode)
    return url + "&prepared=false" if request.param.endswith("unprepared") else url


def policy(store: str, url: str, kinds: str = "") -> str:
    return POLICY.format(store=store, url=url, secret=SECRET, kinds=kinds)


async def until(clock: FakeClock, done: object, *, step: float = 1.0, limit: float = 30.0) -> None:
    """Move fake time on by `step` until `done()` holds (real waiting only for loopback)."""
    async with asyncio.timeout(limit):
        while not done():  # type: ignore[operator]
            await clock.advance(step)
            await asyncio.sleep(0.01)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving(fail_first=5) as r:
        yield r


async def test_every_event_arrives_signed_in_order_through_503s(
    store_url: str, receiver: Receiver
) -> None:
    """A receiver answering 503 at first gets every event of each delivery, once each
    accepted, in order, each signature valid for the `standardwebhooks` package."""
    clock = FakeClock()
    notifier = Notifier.from_yaml(policy(store_url, receiver.url), clock=clock)
    async with notifier:
        ids = [(await notifier.send(WHO, Message(text=f"hi {i}"))).id for i in range(3)]
        expected = len(ids) * len(EXPECTED)

        def all_told() -> bool:
            return sum(map(len, check_arrivals(receiver, SECRET).values())) == expected

        await until(clock, all_told)
        for delivery_id in ids:
            assert (await notifier.get(delivery_id)).status is DeliveryStatus.DELIVERED
    events = check_arrivals(receiver, SECRET)
    assert sorted(events) == sorted(ids)
    for delivery_id, told in events.items():
        got = [(e["type"], e["data"].get("reason") or e["data"]["status"]) for e in told]
        assert got == EXPECTED, delivery_id
    assert sum(a.status == 503 for a in receiver.arrivals) == 5


async def test_kinds_choose_what_is_posted(store_url: str, receiver: Receiver) -> None:
    """`kinds: [finished]` posts one event per delivery, its end, and nothing else."""
    clock = FakeClock()
    text = policy(store_url, receiver.url, kinds=", kinds: [finished]")
    async with Notifier.from_yaml(text, clock=clock) as notifier:
        delivery = await notifier.send(WHO, Message(text="hi"))
        await until(clock, lambda: bool(receiver.accepted()))
        await clock.advance(60)
        await asyncio.sleep(0.05)
    [told] = check_arrivals(receiver, SECRET).values()
    assert [(e["type"], e["data"]["status"], e["data"]["channel"]) for e in told] == [
        ("delivery.finished", "delivered", "sms")
    ]
    assert told[0]["data"]["delivery_id"] == delivery.id


async def test_a_stuck_senders_lease_runs_out_and_another_posts(
    store_url: str, receiver: Receiver
) -> None:
    """An event whose sender hangs on it past its lease is posted by another sender, and
    the delivery's later events wait for that: in order, the stuck answer changing nothing."""
    receiver.fail_first, receiver.hang_first = 0, 3.0
    clock = FakeClock()
    text = policy(store_url, receiver.url, kinds=", kinds: [attempt, finished]")
    text = text.replace('secret: "', 'timeout: 20s, secret: "')
    store = open_store(store_url)
    stuck = Notifier.from_yaml(text, clock=clock, store=store)
    async with stuck:
        delivery = await stuck.send(WHO, Message(text="hi"))
        await until(clock, lambda: bool(receiver.arrivals), step=0.1)
        # the cascade goes on meanwhile; its events wait behind the first
        await clock.advance(30)
        await asyncio.sleep(0.05)
        assert len(receiver.arrivals) == 1
        other = Notifier.from_yaml(text, clock=clock, store=store if store_url == "memory://"
                                   else None)  # fmt: skip
        async with other:
            await until(clock, lambda: any(
                a.payload["type"] == "delivery.finished" for a in receiver.accepted()
            ), step=5.0)  # fmt: skip
            assert (await other.get(delivery.id)).status is DeliveryStatus.DELIVERED
    told = check_arrivals(receiver, SECRET)[delivery.id]
    assert [e["data"]["seq"] for e in told] == [1, 2, 3]  # two attempts, the end
    assert [e["type"] for e in told][-1] == "delivery.finished"
    first = receiver.arrivals[0].headers["webhook-id"]
    assert [a.headers["webhook-id"] for a in receiver.arrivals].count(first) == 2


def test_events_settings_are_checked() -> None:
    """A secret that is not `whsec_<base64>`, a URL that is not http(s) and an unknown
    kind are refused with the field named."""
    bad = POLICY.format(store="memory://", url="ftp://x", secret="plain", kinds=", kinds: [sent]")
    with pytest.raises(PolicyError) as caught:
        Notifier.from_yaml(bad)
    text = str(caught.value)
    assert "events.url" in text
    assert "events.secret" in text
    assert "events.kinds" in text


async def test_cancel_posts_finished_cancelled(store_url: str, receiver: Receiver) -> None:
    """`cancel()` writes the `finished` event with the cancellation, and it is posted."""
    receiver.fail_first = 0
    clock = FakeClock()
    text = policy(store_url, receiver.url, kinds=", kinds: [finished]")
    text = text.replace("behavior: fail_receipt, receipt_delay: 5s", "behavior: no_receipt")
    async with Notifier.from_yaml(text, clock=clock) as notifier:
        delivery = await notifier.send(WHO, Message(text="hi"))
        await clock.advance(1)
        await notifier.cancel(delivery.id)
        await until(clock, lambda: bool(receiver.accepted()))
    [told] = check_arrivals(receiver, SECRET)[delivery.id]
    assert (told["type"], told["data"]["status"]) == ("delivery.finished", "cancelled")


async def test_purge_keeps_what_is_not_posted(store_url: str, receiver: Receiver) -> None:
    """A purge while a finished delivery's events are unsent loses none of them: the SQL
    stores keep the delivery until they are posted, then purge it."""
    receiver.fail_first = 10**6  # down until told otherwise
    clock = FakeClock()
    text = policy(store_url, receiver.url, kinds=", kinds: [finished]")
    async with Notifier.from_yaml(text, clock=clock) as notifier:
        delivery = await notifier.send(WHO, Message(text="hi"))
        await until(clock, lambda: bool(receiver.arrivals))
        assert (await notifier.get(delivery.id)).final
        purge = notifier.store.purge  # type: ignore[attr-defined]
        gone = await purge(0.0, clock.now())
        assert gone == (1 if store_url == "memory://" else 0)
        receiver.fail_first = 0
        await until(clock, lambda: bool(receiver.accepted()), step=60.0)
        await clock.advance(1)
        await asyncio.sleep(0.05)
        assert await purge(0.0, clock.now()) == (0 if store_url == "memory://" else 1)
    [told] = check_arrivals(receiver, SECRET)[delivery.id]
    assert told["data"]["status"] == "delivered"


async def test_a_process_that_only_posts(store_url: str, receiver: Receiver) -> None:
    """`outbox=False` writes the events and posts none; `Notifier(worker=False,
    outbox=True)` on the same store posts them, in order, without advancing anything."""
    receiver.fail_first = 0
    clock = FakeClock()
    text = policy(store_url, receiver.url, kinds=", kinds: [attempt, finished]")
    store = open_store(store_url) if store_url == "memory://" else None
    working = Notifier.from_yaml(text, clock=clock, store=store, outbox=False)
    async with working:
        delivery = await working.send(WHO, Message(text="hi"))
        for _ in range(20):
            await clock.advance(30)
            await asyncio.sleep(0.01)
        assert (await working.get(delivery.id)).final
        assert not receiver.arrivals
        poster = Notifier.from_yaml(text, clock=clock, store=store, worker=False, outbox=True)
        async with poster:
            await until(clock, lambda: len(receiver.accepted()) == 3)
    told = check_arrivals(receiver, SECRET)[delivery.id]
    assert [e["type"] for e in told] == [
        "delivery.attempt",
        "delivery.attempt",
        "delivery.finished",
    ]
