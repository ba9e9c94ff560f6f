"""`deliveries` and `stats` on every store, against a known scenario of real cascades
driven on fakes and the fake clock: every figure is checked by hand, and the SQL
stores' aggregates against the Python definition (`observe.compute`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cascade_notify import Message, Notifier, Recipient
from cascade_notify.models import DeliveryStatus
from cascade_notify.observe import DeliveryQuery, QueryError, Stats, compute, timeline
from cascade_notify.testing import FakeClock, run_until_final

from .conftest import NOW, StoreFactory

POLICY = """
default_policy: service
providers:
  wa:   {type: fake, channel: whatsapp, behavior: read, receipt_delay: 5s, cost: 0.01,
         overrides: {r2: fail_receipt, r3: unreachable, r5: fail}}
  tg:   {type: fake, channel: telegram, behavior: deliver, receipt_delay: 2s, receipts: [delivered],
         overrides: {r3: fail}}
  sms1: {type: fake, channel: sms, behavior: deliver, receipt_delay: 10s, cost: 0.05,
         overrides: {r5: fail_receipt}}
  sms2: {type: fake, channel: sms, behavior: deliver, receipt_delay: 30s, cost: 0.07}
policies:
  service:
    steps:
      - {channel: whatsapp, providers: [wa], timeout: 2m}
      - {channel: telegram, providers: [tg]}
      - {channel: sms, providers: [sms1]}
  alerts:
    steps:
      - {channel: sms, providers: [sms2]}
"""
PHONE = "+79161234567"
DAY1 = "2026-01-01"
DAY2 = "2026-01-02"


def everyone() -> list[tuple[Recipient, str]]:
    return [
        (
            Recipient(id="r1", whatsapp=PHONE, telegram="1", sms=PHONE, timezone="Asia/Tokyo"),
            "service",
        ),
        (Recipient(id="r2", whatsapp=PHONE, telegram="2", sms=PHONE), "service"),
        (Recipient(id="r3", whatsapp=PHONE, telegram="3", sms=PHONE), "service"),
        (Recipient(id="r4", sms=PHONE), "service"),
        (Recipient(id="r5", whatsapp=PHONE, sms=PHONE), "service"),
        (Recipient(id="r6", sms=PHONE), "alerts"),
    ]


@pytest.fixture
async def filled(store_factory: StoreFactory) -> AsyncIterator[tuple[Notifier, dict[str, str]]]:
    """A notifier whose store holds the scenario's seven finished deliveries: six on
    day one, r7 (as r1) a day later; recipient id -> delivery id."""
    clock = FakeClock(start=NOW)
    ids: dict[str, str] = {}
    async with Notifier.from_yaml(POLICY, clock=clock, store=store_factory()) as notifier:
        for recipient, policy in everyone():
            sent = await notifier.send(recipient, Message(text="hi"), policy=policy)
            ids[recipient.id] = sent.id
        await run_until_final(notifier, clock, list(ids.values()))
    # the next day, in a process of its own (a worker polling a shared store through a
    # whole day of fake time would take a while)
    clock = FakeClock(start=NOW + 86400)
    async with Notifier.from_yaml(POLICY, clock=clock, store=store_factory()) as notifier:
        r7 = Recipient(id="r7", whatsapp=PHONE, telegram="7", sms=PHONE)
        ids["r7"] = (await notifier.send(r7, Message(text="hi"))).id
        await run_until_final(notifier, clock, [ids["r7"]])
        yield notifier, ids


WINDOW = {"since": NOW - 1, "until": NOW + 3 * 86400}


async def test_stats_by_channel_every_figure(filled: tuple[Notifier, dict[str, str]]) -> None:
    notifier, _ = filled
    stats = await notifier.stats(**WINDOW, by="channel")
    assert stats.deliveries == 7
    assert dict(stats.outcomes) == {"delivered": 6, "exhausted": 1}
    assert stats.delivered_share == pytest.approx(6 / 7)
    assert [r.key for r in stats.rows] == [("sms",), ("telegram",), ("whatsapp",)]

    wa = stats.row("whatsapp")
    assert wa is not None
    # r1, r7 read; r2 failed receipt; r3 unreachable; r5 refused at send
    assert (wa.sent, wa.delivered, wa.read, wa.failed) == (5, 2, 2, 3)
    assert wa.delivery_rate == pytest.approx(2 / 5)
    assert dict(wa.skipped) == {"no_address": 1}  # r4
    assert (wa.won, wa.median_seconds, wa.p95_seconds, wa.rescues) == (2, 5.0, 5.0, 0)
    assert wa.spent == pytest.approx(0.03)  # the three it accepted: r1, r2, r7

    tg = stats.row("telegram")
    assert tg is not None
    assert (tg.sent, tg.delivered, tg.read, tg.failed) == (2, 1, 0, 1)  # r2; r3
    assert dict(tg.skipped) == {"no_address": 2}  # r4, r5
    # r2: whatsapp's failed receipt at +5 s, telegram's delivered 2 s later: rescued
    assert (tg.won, tg.median_seconds, tg.p95_seconds, tg.rescues) == (1, 7.0, 7.0, 1)
    assert tg.spent is None  # no cost known

    sms = stats.row("sms")
    assert sms is not None
    assert (sms.sent, sms.delivered, sms.read, sms.failed) == (4, 3, 0, 1)  # r3 r4 r6; r5
    assert dict(sms.skipped) == {}
    # r3 10 s, r4 10 s, r6 30 s: median 10, p95 10 + 0.9 * 20 (interpolated)
    assert (sms.won, sms.median_seconds, sms.rescues) == (3, 10.0, 1)  # r3 was rescued
    assert sms.p95_seconds == pytest.approx(28.0)
    assert sms.spent == pytest.approx(3 * 0.05 + 0.07)


async def test_stats_by_provider_step_policy_day(filled: tuple[Notifier, dict[str, str]]) -> None:
    notifier, _ = filled
    by_provider = await notifier.stats(**WINDOW, by="provider")
    assert [r.key for r in by_provider.rows] == [("sms1",), ("sms2",), ("tg",), ("wa",)]
    sms2 = by_provider.row("sms2")
    assert sms2 is not None
    assert (sms2.sent, sms2.won, sms2.median_seconds, sms2.rescues) == (1, 1, 30.0, 0)
    assert all(not r.skipped for r in by_provider.rows)  # a skip has no provider

    by_step = await notifier.stats(**WINDOW, by=("policy", "step"))
    assert [r.key for r in by_step.rows] == [
        ("alerts", 0),
        ("service", 0),
        ("service", 1),
        ("service", 2),
    ]
    step2 = by_step.row("service", 2)
    assert step2 is not None
    assert (step2.sent, step2.delivered, step2.won, step2.rescues) == (3, 2, 2, 1)

    by_day = await notifier.stats(**WINDOW, by="day")
    assert [r.key for r in by_day.rows] == [(DAY1,), (DAY2,)]
    day2 = by_day.row(DAY2)
    assert day2 is not None
    assert (day2.sent, day2.delivered, day2.won, day2.median_seconds) == (1, 1, 1, 5.0)
    day1 = by_day.row(DAY1)
    assert day1 is not None
    # won on day one: r1 5, r2 7, r3 10, r4 10, r6 30
    assert day1.median_seconds == 10.0
    assert day1.p95_seconds == pytest.approx(10 + 0.8 * 20)
    assert day1.rescues == 2
    assert dict(day1.skipped) == {"no_address": 3}

    only_day2 = await notifier.stats(since=NOW + 86400, until=NOW + 2 * 86400, by="channel")
    assert only_day2.deliveries == 1
    assert [r.key for r in only_day2.rows] == [("whatsapp",)]


@pytest.mark.parametrize(
    "by",
    [(), ("channel",), ("channel", "day"), ("provider", "day"), ("step",), ("policy",)],
)
async def test_stats_match_the_python_definition(
    filled: tuple[Notifier, dict[str, str]], by: tuple[str, ...]
) -> None:
    notifier, ids = filled
    deliveries = [await notifier.get(i) for i in ids.values()]
    expected = compute.stats(deliveries, WINDOW["since"], WINDOW["until"], by)
    got = await notifier.stats(**WINDOW, by=by)  # type: ignore[arg-type]
    assert _rounded(got) == _rounded(expected)


def _rounded(stats: Stats) -> object:
    data = stats.to_dict()
    for row in data["rows"]:  # type: ignore[union-attr]
        for name in ("spent", "median_seconds", "p95_seconds", "delivery_rate"):
            if row[name] is not None:
                row[name] = round(row[name], 9)
    return data


async def test_deliveries_filters_and_pages(filled: tuple[Notifier, dict[str, str]]) -> None:
    notifier, ids = filled
    # newest first; created in the same instant, the larger id first
    day1 = sorted((ids[f"r{i}"] for i in range(1, 7)), reverse=True)
    order = [ids["r7"], *day1]
    page = await notifier.deliveries(limit=3)
    seen = [d.id for d in page.items]
    while page.cursor is not None:
        page = await notifier.deliveries(cursor=page.cursor, limit=3)
        seen.extend(d.id for d in page.items)
    assert seen == order

    [r3] = (await notifier.deliveries(DeliveryQuery(recipient="r3"))).items
    assert (r3.id, r3.recipient_id, r3.status, r3.channel, r3.attempts, r3.policy) == (
        ids["r3"], "r3", DeliveryStatus.DELIVERED, "sms", 3, "service",
    )  # fmt: skip
    failed = await notifier.deliveries(DeliveryQuery(status="exhausted"))  # type: ignore[arg-type]
    assert [d.id for d in failed.items] == [ids["r5"]]
    on_telegram = await notifier.deliveries(DeliveryQuery(channel="telegram"))
    assert {d.id for d in on_telegram.items} == {ids["r2"], ids["r3"]}
    alerts = await notifier.deliveries(DeliveryQuery(policy="alerts"))
    assert [d.id for d in alerts.items] == [ids["r6"]]
    late = await notifier.deliveries(DeliveryQuery(since=NOW + 3600))
    assert [d.id for d in late.items] == [ids["r7"]]
    early = await notifier.deliveries(DeliveryQuery(until=NOW + 3600, recipient="r7"))
    assert early.items == () and early.cursor is None


async def test_cursor_is_stable_under_inserts(filled: tuple[Notifier, dict[str, str]]) -> None:
    notifier, _ = filled
    first = await notifier.deliveries(limit=2)
    assert first.cursor is not None
    rest_before = await notifier.deliveries(cursor=first.cursor, limit=100)
    await notifier.send(Recipient(id="new", sms=PHONE), Message(text="later"), policy="alerts")
    rest_after = await notifier.deliveries(cursor=first.cursor, limit=100)
    assert rest_after == rest_before


async def test_bad_queries_say_which_argument(filled: tuple[Notifier, dict[str, str]]) -> None:
    notifier, _ = filled
    with pytest.raises(QueryError, match="cursor"):
        await notifier.deliveries(cursor="not-a-cursor")
    with pytest.raises(QueryError, match="by: 'hour'"):
        await notifier.stats(since=NOW, by="hour")  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="limit"):
        await notifier.deliveries(limit=0)
    with pytest.raises(QueryError, match="status"):
        DeliveryQuery(status="lost")  # type: ignore[arg-type]


async def test_timeline_of_a_rescued_delivery(filled: tuple[Notifier, dict[str, str]]) -> None:
    notifier, ids = filled
    story = timeline(await notifier.get(ids["r2"]))
    kinds = [(e.kind, e.channel, e.status, e.offset) for e in story.entries]
    assert kinds == [
        ("created", None, None, 0.0),
        ("attempt", "whatsapp", "failed", 0.0),
        ("receipt", "whatsapp", "failed", 5.0),
        ("attempt", "telegram", "delivered", 5.0),
        ("receipt", "telegram", "delivered", 7.0),
        ("finished", "telegram", "delivered", 7.0),
    ]
    assert story.entries[1].cost == 0.01
    tokyo = timeline(await notifier.get(ids["r1"])).to_dict()
    assert tokyo["timezone"] == "Asia/Tokyo"
    assert tokyo["created_at"] == "2026-01-01T09:00:00+09:00"  # NOW is midnight UTC


SEARCH_POLICY = """
default_region: RU
providers:
  wa:   {type: fake, channel: whatsapp, behavior: deliver, cost: 0.25}
  mail: {type: fake, channel: email, behavior: deliver, cost: 0.5}
policies:
  service:
    steps:
      - {channel: whatsapp, providers: [wa]}
      - {channel: email, providers: [mail], wait_for: accepted}
"""


async def test_search_by_phone_email_and_idempotency_key(store_factory: StoreFactory) -> None:
    """A phone on any phone channel, an e-mail in any case and an idempotency key each find
    their deliveries, newest first, with what they cost."""
    clock = FakeClock(start=NOW)
    async with Notifier.from_yaml(SEARCH_POLICY, clock=clock, store=store_factory()) as notifier:
        whatsapp = await notifier.send(
            Recipient(id="a", whatsapp="8 (916) 123-45-67"), Message(text="1"), idempotency_key="k1"
        )
        await clock.advance(1)
        sms_only = await notifier.send(
            Recipient(id="b", sms="+79161234567", email="Anna@Example.com"), Message(text="2")
        )
        await clock.advance(1)
        other = await notifier.send(Recipient(id="c", whatsapp="+79031234567"), Message(text="3"))
        await run_until_final(notifier, clock, [whatsapp.id, sms_only.id, other.id])

        by_phone = await notifier.deliveries(DeliveryQuery(phone="+79161234567"))
        assert [d.id for d in by_phone.items] == [sms_only.id, whatsapp.id]
        assert by_phone.items[1].cost == pytest.approx(0.25)
        by_email = await notifier.deliveries(DeliveryQuery(email="anna@EXAMPLE.com"))
        assert [d.id for d in by_email.items] == [sms_only.id]
        assert by_email.items[0].cost == pytest.approx(0.5)
        by_key = await notifier.deliveries(DeliveryQuery(idempotency_key="k1"))
        assert [d.id for d in by_key.items] == [whatsapp.id]
        assert (await notifier.deliveries(DeliveryQuery(idempotency_key="k2"))).items == ()
        assert (await notifier.deliveries(DeliveryQuery(phone="+79990000000"))).items == ()


async def test_failures_by_kind_match_the_python_definition(
    filled: tuple[Notifier, dict[str, str]],
) -> None:
    """Failed attempts are counted by channel, provider, status and code, most frequent
    first, alike on every store."""
    notifier, ids = filled
    deliveries = [await notifier.get(i) for i in ids.values()]
    expected = compute.failures(deliveries, WINDOW["since"], WINDOW["until"])
    got = await notifier.store.failures(WINDOW["since"], WINDOW["until"])  # type: ignore[attr-defined]
    assert got == expected
    kinds: dict[tuple[str, str, str], int] = {}
    for r in got:  # r2's and r5's failures differ by code: two rows
        kinds[r.channel, r.provider, r.status] = (
            kinds.get((r.channel, r.provider, r.status), 0) + r.count
        )
    # wa: r2's failed receipt, r5 refused; r3 unreachable; tg: r3; sms1: r5's failed receipt
    assert kinds == {
        ("whatsapp", "wa", "failed"): 2,
        ("whatsapp", "wa", "unreachable"): 1,
        ("telegram", "tg", "failed"): 1,
        ("sms", "sms1", "failed"): 1,
    }
    assert len(got) == 5 and all(r.count == 1 for r in got)
    assert await notifier.store.failures(NOW + 10 * 86400, NOW + 11 * 86400) == []  # type: ignore[attr-defined]
