"""`order: learned` on every store (memory, SQLite, PostgreSQL), through the notifier:
the channel that reached a recipient goes first next time, one that failed them goes
last, a recipient never seen gets the policy's order, and `forget` erases it (issue 20)."""

from __future__ import annotations

from cascade_notify import DeliveryStatus, Message, Notifier, Recipient
from cascade_notify.learned import READ_BONUS, Seen, reorder
from cascade_notify.models import Delivery, Step
from cascade_notify.observe.timeline import timeline
from cascade_notify.testing import FakeClock, run_until_final

from .conftest import NOW, StoreFactory

POLICY = """
providers:
  wa:  {type: fake, channel: whatsapp, overrides: {olga: no_receipt, ivan: unreachable}}
  vb:  {type: fake, channel: viber, behavior: read, overrides: {ivan: no_receipt}}
  sms: {type: fake, channel: sms}
policies:
  learned:
    order: learned
    steps:
      - {channel: whatsapp, providers: [wa], timeout: 2m}
      - {channel: viber, providers: [vb], timeout: 2m}
      - {channel: sms, providers: [sms], timeout: 2m}
  pinned:
    order: learned
    steps:
      - {channel: whatsapp, providers: [wa], timeout: 2m}
      - {channel: viber, providers: [vb], timeout: 2m}
      - {channel: sms, providers: [sms], timeout: 2m, keep_place: true}
  fixed:
    steps:
      - {channel: whatsapp, providers: [wa], timeout: 2m}
      - {channel: viber, providers: [vb], timeout: 2m}
      - {channel: sms, providers: [sms], timeout: 2m}
default_policy: learned
"""
TEXT = Message(text="Your parcel has arrived.")


def person(name: str) -> Recipient:
    return Recipient(id=name, whatsapp="+79161234567", viber=f"v-{name}", sms="+79161234567")


def channels(delivery: Delivery) -> list[str]:
    return [step.channel for step in delivery.steps]


async def _twice(
    store_factory: StoreFactory, name: str, policy: str = "learned"
) -> tuple[Delivery, Delivery]:
    """Two deliveries to `name`, the second sent once the first has ended."""
    clock = FakeClock(NOW)
    notifier = Notifier.from_yaml(POLICY, clock=clock, store=store_factory())
    await notifier.start()
    try:
        first = await notifier.send(person(name), TEXT, policy=policy)
        (first,) = await run_until_final(notifier, clock, [first.id])
        await clock.advance(60.0)
        second = await notifier.send(person(name), TEXT, policy=policy)
        (second,) = await run_until_final(notifier, clock, [second.id])
    finally:
        await notifier.stop()
    return first, second


async def test_the_recipient_who_reads_viber_gets_viber_first(
    store_factory: StoreFactory,
) -> None:
    """WhatsApp never reaches Olga and Viber is read: her next message goes to Viber first,
    and is delivered by its first send; the reason is recorded on the delivery."""
    first, second = await _twice(store_factory, "olga")
    assert first.channel == "viber" and channels(first) == ["whatsapp", "viber", "sms"]
    assert first.order is not None and not first.order.moved and first.order.reasons == ()
    assert second.status is DeliveryStatus.DELIVERED and second.channel == "viber"
    assert channels(second) == ["viber", "whatsapp", "sms"]
    assert [a.channel for a in second.attempts] == ["viber"]
    assert second.order is not None and second.order.moved
    assert second.order.channels == ("viber", "whatsapp", "sms")
    ((channel, what, _),) = second.order.reasons
    assert (channel, what) == ("viber", "read")
    assert (second.order.reason("viber") or "").startswith("viber read 2026-01-01 00:0")


async def test_a_blocked_channel_goes_last(store_factory: StoreFactory) -> None:
    """Ivan is unreachable on WhatsApp and Viber never arrives; SMS reaches him: next time
    SMS is first, Viber (never heard of) next, WhatsApp (failed him) last."""
    first, second = await _twice(store_factory, "ivan")
    assert first.channel == "sms"
    assert [a.status.value for a in first.attempts] == ["unreachable", "timed_out", "delivered"]
    assert channels(second) == ["sms", "viber", "whatsapp"]
    assert second.order is not None
    assert [(c, what) for c, what, _ in second.order.reasons] == [
        ("sms", "reached"),
        ("whatsapp", "failed"),
    ]
    assert (second.order.reason("whatsapp") or "").endswith("UTC, last until it succeeds")
    assert [a.channel for a in second.attempts] == ["sms"]


async def test_a_step_that_keeps_its_place_is_never_moved(store_factory: StoreFactory) -> None:
    """With `keep_place` on SMS, SMS stays last though it reached Ivan; the others are
    reordered around it."""
    _, second = await _twice(store_factory, "ivan", policy="pinned")
    assert channels(second) == ["viber", "whatsapp", "sms"]


async def test_a_never_seen_recipient_gets_the_policys_order(store_factory: StoreFactory) -> None:
    """Nothing known of Anna: the policy's order, recorded as such; a fixed policy's
    deliveries teach nothing and record no order."""
    clock = FakeClock(NOW)
    notifier = Notifier.from_yaml(POLICY, clock=clock, store=store_factory())
    await notifier.start()
    try:
        fixed = await notifier.send(person("anna"), TEXT, policy="fixed")
        await run_until_final(notifier, clock, [fixed.id])
        assert fixed.order is None
        learned = await notifier.send(person("anna"), TEXT)
    finally:
        await notifier.stop()
    assert channels(learned) == ["whatsapp", "viber", "sms"]
    assert learned.order is not None and not learned.order.moved
    assert learned.order.describe() == (
        "learned order: the policy's (nothing learned of this recipient yet)"
    )


async def test_forget_erases_the_history(store_factory: StoreFactory) -> None:
    """After `forget("olga")` her next message gets the policy's order again."""
    clock = FakeClock(NOW)
    notifier = Notifier.from_yaml(POLICY, clock=clock, store=store_factory())
    await notifier.start()
    try:
        first = await notifier.send(person("olga"), TEXT)
        await run_until_final(notifier, clock, [first.id])
        assert await notifier.forget("olga") >= 1
        again = await notifier.send(person("olga"), TEXT)
        assert await notifier.forget("olga") == 0
    finally:
        await notifier.stop()
    assert channels(again) == ["whatsapp", "viber", "sms"]
    assert again.order is not None and again.order.reasons == ()


async def test_the_timeline_shows_the_order(store_factory: StoreFactory) -> None:
    """`cascade-notify status` (the timeline) says how the steps were ordered, and why;
    its JSON carries the order; a store read back by another object keeps it."""
    _, second = await _twice(store_factory, "olga")
    reader = store_factory()
    await reader.open()
    try:
        stored = await reader.get(second.id)
    finally:
        await reader.close()
    assert stored is not None and stored.order == second.order
    story = timeline(stored)
    assert story.entries[0].detail.startswith("learned by the caller: send(policy=); ")
    assert "learned order: viber → whatsapp → sms (viber read " in story.entries[0].detail
    assert story.to_dict()["order"] == second.order.to_dict()  # type: ignore[union-attr]


def test_the_score_a_read_counts_as_a_delivery_a_week_later() -> None:
    """A read three days ago outranks a delivery today; a read ten days ago does not;
    ties keep the policy's order."""
    steps = (Step(channel="whatsapp", providers=("wa",)), Step(channel="viber", providers=("vb",)))
    day = 86400.0
    read = Seen(rank=NOW - 3 * day + READ_BONUS, reached_ts=NOW - 3 * day)
    old_read = Seen(rank=NOW - 10 * day + READ_BONUS, reached_ts=NOW - 10 * day)
    today = Seen(rank=NOW, reached_ts=NOW)
    order = [s.channel for s in reorder(steps, {"viber": read, "whatsapp": today})[0]]
    assert order == ["viber", "whatsapp"]
    order = [s.channel for s in reorder(steps, {"viber": old_read, "whatsapp": today})[0]]
    assert order == ["whatsapp", "viber"]
    order = [s.channel for s in reorder(steps, {"viber": today, "whatsapp": today})[0]]
    assert order == ["whatsapp", "viber"]


async def test_postgres_without_session_functions_learns_the_same(
    pg_dsn: str, pg_schema: str
) -> None:
    """`prepared=false` (PgBouncer in transaction mode: no session functions) teaches the
    history through its statement-by-statement writes, with the same result."""
    from cascade_notify.stores.postgres import PostgresStore

    def factory() -> PostgresStore:
        return PostgresStore(pg_dsn, schema=pg_schema, prepared=False)

    olga = await _twice(factory, "olga")
    ivan = await _twice(factory, "ivan")
    assert channels(olga[1]) == ["viber", "whatsapp", "sms"]
    assert channels(ivan[1]) == ["sms", "viber", "whatsapp"]


def test_validate_shows_the_order_and_refuses_an_unknown_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`validate` lists a learned policy with its pinned steps marked; `order: random` is
    an error at its line naming the allowed values."""
    import pytest
    from typer.testing import CliRunner

    from cascade_notify.cli import app
    from cascade_notify.errors import PolicyError
    from cascade_notify.policy import load_config

    path = tmp_path / "cascade.yaml"
    path.write_text(POLICY)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "learned (default): whatsapp → viber → sms; order learned; ttl 1d" in result.stdout
    assert "pinned: whatsapp → viber → sms*; order learned (* keeps its place)" in result.stdout
    with pytest.raises(PolicyError) as caught:
        load_config(POLICY.replace("order: learned", "order: random", 1))
    (issue,) = caught.value.issues
    assert issue.path == "policies.learned.order" and issue.line == 8
    assert "'fixed'" in issue.message and "'learned'" in issue.message


def test_status_prints_the_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`cascade-notify status ID` prints how the steps were ordered, under the route."""
    import asyncio

    from typer.testing import CliRunner

    from cascade_notify.cli import app
    from cascade_notify.stores.sqlite import SQLiteStore

    database = tmp_path / "cascade.db"
    _, second = asyncio.run(_twice(lambda: SQLiteStore(database), "olga"))
    path = tmp_path / "cascade.yaml"
    path.write_text(f"store: sqlite:///{database}\n{POLICY}")
    shown = CliRunner().invoke(app, ["status", second.id, "--policy", str(path)])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    route = next(i for i, line in enumerate(lines) if line.startswith("policy chosen by"))
    assert lines[route + 1].startswith("learned order: viber → whatsapp → sms (viber read ")


async def test_the_history_keeps_sixteen_channels_a_recipient(store) -> None:  # type: ignore[no-untyped-def]
    """Seventeen learned-order deliveries to Anna, each delivered on a channel of its own:
    the store keeps the sixteen heard of last, in the commit that ends each one."""
    from cascade_notify.learned import HISTORY_LIMIT
    from cascade_notify.models import Order
    from cascade_notify.stores.base import Transition

    from .conftest import delivery

    for i in range(HISTORY_LIMIT + 1):
        steps = (Step(channel=f"c{i}", providers=("p",)),)
        made = delivery(now=NOW + i, steps=steps, order=Order(channels=(f"c{i}",)))
        await store.create(made)
        (claim,) = await store.claim(NOW + i, limit=1, lease=30.0)
        done = Transition(status=DeliveryStatus.DELIVERED, channel=f"c{i}", finished_ts=NOW + i)
        await store.commit(claim, done)
    known = await store.history("anna")
    assert sorted(known) == sorted(f"c{i}" for i in range(1, HISTORY_LIMIT + 1))
    assert known["c5"] == Seen(rank=NOW + 5, reached_ts=NOW + 5)
    assert await store.forget("anna") == HISTORY_LIMIT
    assert await store.history("anna") == {}
