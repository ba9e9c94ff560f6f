"""The breaker, the token bucket and the brakes as plain objects, and what the guard counts."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from cascade_notify import Attempt, AttemptStatus, Receipt, ReceiptStatus
from cascade_notify.policy import load_config
from cascade_notify.providers import registry
from cascade_notify.providers.base import Provider
from cascade_notify.resilience import BrakeSettings, BreakerSettings, Protection
from cascade_notify.resilience.circuit import Circuit
from cascade_notify.resilience.limits import Brakes, TokenBucket
from cascade_notify.stores.memory import SharedTable
from cascade_notify.testing import FakeClock

SETTINGS = BreakerSettings(failures=5, rate=0.5, window=60, min_calls=20, cool_down=30, probes=3)


def circuit() -> Circuit:
    return Circuit("wa", SETTINGS)


def test_a_run_of_failures_opens_the_breaker() -> None:
    """Five failures in a row open it; a success in between starts the count again."""
    breaker = circuit()
    for _ in range(4):
        assert not breaker.failure(0)
    breaker.success(0)
    assert [breaker.failure(1) for _ in range(5)] == [False] * 4 + [True]
    assert breaker.state(1) == "open" and not breaker.allows(1)
    assert breaker.info(1).reason == "5 failures in a row"


def test_a_failure_rate_opens_the_breaker() -> None:
    """Half of at least 20 calls in the window failing opens it, though no run reached 5."""
    breaker = circuit()
    opened = []
    for i in range(20):
        opened.append(breaker.failure(i) if i % 2 else (breaker.neutral(i), False)[1])
    assert opened[-1] and not any(opened[:-1])
    assert breaker.info(19).reason == "10 of the last 20 calls failed"


def test_failures_older_than_the_window_are_forgotten() -> None:
    """Calls that left the window no longer count toward the rate."""
    breaker = circuit()
    for i in range(19):
        breaker.failure(i * 10) if i % 2 else breaker.success(i * 10)
    assert breaker.state(200) == "closed"


def test_half_open_after_cool_down_lets_a_few_probes_through() -> None:
    """After the cool-down three probes may go at once; a fourth sender is kept out."""
    breaker = circuit()
    for _ in range(5):
        breaker.failure(0)
    assert not breaker.allows(29.9)
    assert breaker.state(30) == "half_open" and breaker.allows(30)
    assert [breaker.take_probe(30, f"d{i}", 90) for i in range(4)] == [True] * 3 + [False]
    assert not breaker.allows(31) and breaker.allows(31, "d1")
    assert breaker.allows(90)  # the probe slots lapse with their step's deadline


@pytest.mark.parametrize(
    ("outcome", "state"), [("success", "closed"), ("failure", "open"), ("neutral", "half_open")]
)
def test_a_probe_decides(outcome: str, state: str) -> None:
    """A probe's success closes the breaker, its failure reopens it; neither frees its slot."""
    breaker = circuit()
    for _ in range(5):
        breaker.failure(0)
    breaker.take_probe(30, "d1", 90)
    if outcome == "success":
        assert breaker.success(31)
    elif outcome == "failure":
        assert breaker.failure(31, started=30, holder="d1")
        assert breaker.info(31).until == 61
    else:
        breaker.neutral(31, "d1")
    assert breaker.state(31) == state


def test_failures_of_sends_from_before_the_probe_do_not_reopen() -> None:
    """A time-out of a send made before the breaker opened says nothing about the probes."""
    breaker = circuit()
    for _ in range(5):
        breaker.failure(10)
    breaker.take_probe(40, "d1", 100)
    assert not breaker.failure(45, started=5, holder="old")
    assert breaker.state(45) == "half_open"


def test_opened_and_closed_by_hand() -> None:
    """By hand it opens for the time given, then probes; closing by hand is at once."""
    breaker = circuit()
    breaker.force_open(0, 7200, "blocked")
    info = breaker.info(0)
    assert (info.state, info.manual, info.until, info.reason) == ("open", True, 7200, "blocked")
    assert breaker.state(7200) == "half_open"
    breaker.force_close(10, "unblocked")
    assert breaker.state(10) == "closed"


def test_without_settings_the_breaker_only_opens_by_hand() -> None:
    """`breaker: false`: no number of failures opens it."""
    breaker = Circuit("wa", None)
    assert not any(breaker.failure(0) for _ in range(100))
    breaker.force_open(0, 60, "by hand")
    assert breaker.state(1) == "open"
    assert breaker.take_probe(60, "d1", 120) and breaker.failure(61, started=60, holder="d1")
    assert breaker.info(61).until == 91  # a failed probe reopens it for the default cool-down


def test_another_workers_state_is_adopted() -> None:
    """A snapshot taken from one breaker and adopted by another moves it to the same state."""
    first, second = circuit(), circuit()
    for _ in range(5):
        first.failure(0)
    assert second.adopt(first.snapshot(), version=1)
    assert second.state(1) == "open" and second.info(1).until == 30 and second.version == 1


def test_token_bucket_spaces_sends_evenly() -> None:
    """At 30/s with no burst, reservations made at once fall 1/30 s apart."""
    bucket = TokenBucket(30)
    slots = [bucket.reserve(0) for _ in range(4)]
    assert slots == pytest.approx([0, 1 / 30, 2 / 30, 3 / 30])
    assert bucket.reserve(10) == 10  # idle time is not saved up beyond the burst


def test_token_bucket_allows_its_burst_at_once() -> None:
    """A burst of 5 goes at once; the sixth waits one interval."""
    bucket = TokenBucket(1, burst=5)
    assert [bucket.reserve(0) for _ in range(6)] == [0, 0, 0, 0, 0, 1]


def test_shared_table_bump_and_compare_and_set() -> None:
    """Numbers bump from a floor and expire; texts change only from the version read."""
    table = SharedTable()
    assert table.bump("k", 1, floor=0, now=0, ttl=10) == 1
    assert table.bump("k", 1, floor=0, now=5, ttl=10) == 2
    assert table.bump("k", 1, floor=0, now=16, ttl=10) == 1  # expired, counts afresh
    assert table.bump("t", 0.5, floor=100, now=0, ttl=10) == 100.5


async def test_shared_table_texts() -> None:
    """A write with a stale version is refused and changes nothing."""
    table = SharedTable()
    assert await table.shared_put("breaker:wa", "open", version=0, now=0, ttl=60) == 1
    assert await table.shared_put("breaker:wa", "closed", version=0, now=0, ttl=60) is None
    assert await table.shared_get("breaker:", 1) == {"breaker:wa": (1, "open")}
    assert await table.shared_get("breaker:", 61) == {}


def test_brake_counters_are_per_number_per_prefix_per_hour() -> None:
    """An SMS counts against its number and its prefix, in the hour it is sent."""
    brakes = Brakes("p", BrakeSettings(sms_per_prefix_per_hour=20, prefix_digits=4))
    counts = brakes.counts("sms", "+79161234567", 7200.0)
    assert [(c.key, c.limit, c.reason) for c in counts] == [
        ("brake:sms:to:+79161234567@2", 5, "brake_recipient"),
        ("brake:sms:prefix:7916@2", 20, "brake_prefix"),
    ]
    assert brakes.country("sms", "+79161234567") is None  # no list: every country


GUARDED = """
providers:
  wa: {type: fake, channel: whatsapp}
policies:
  p: {steps: [{channel: whatsapp, providers: [wa]}]}
"""


def attempt(status: AttemptStatus, aid: str = "a1", **kw: object) -> Attempt:
    return Attempt(
        id=aid,
        delivery_id=f"d-{aid}",
        step=0,
        channel="whatsapp",
        provider="wa",
        status=status,
        started_ts=0,
        **kw,  # type: ignore[arg-type]
    )


async def run_of(guard: Protection, provider: str = "wa") -> int:
    return next(b.failures_in_row for b in await guard.breakers.list() if b.provider == provider)


@pytest.mark.parametrize(
    ("status", "run"),
    [
        (AttemptStatus.TRANSIENT, 2),
        (AttemptStatus.UNKNOWN, 2),
        (AttemptStatus.TIMED_OUT, 2),
        (AttemptStatus.UNREACHABLE, 0),
        (AttemptStatus.FAILED, 0),
        (AttemptStatus.ACCEPTED, 1),
        (AttemptStatus.ABANDONED, 1),
    ],
)
async def test_what_the_guard_counts_as_a_failure(status: AttemptStatus, run: int) -> None:
    """Errors, lost answers and missing receipts are failures; a recipient's problem ends a run."""
    guard = Protection(load_config(GUARDED), FakeClock())
    guard.observe(attempt(AttemptStatus.TRANSIENT, "a0"), 0)
    guard.observe(attempt(status), 0)
    assert await run_of(guard) == run


class AcceptOnly(Provider):
    """Like a Telegram bot: nothing to report beyond "accepted"."""

    type_name = "accept_only"
    default_channel = "whatsapp"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset({ReceiptStatus.SENT})


async def test_accepted_is_a_success_where_nothing_more_can_come() -> None:
    """For a provider that can report only `accepted`, an accepted send breaks a run."""
    registry.register("accept_only", AcceptOnly)
    try:
        config = load_config("""
providers:
  wa: {type: accept_only}
policies:
  p: {steps: [{channel: whatsapp, providers: [wa], wait_for: accepted}]}
""")
    finally:
        registry.unregister("accept_only")
    guard = Protection(config, FakeClock())
    guard.observe(attempt(AttemptStatus.TRANSIENT, "a0"), 0)
    guard.observe(attempt(AttemptStatus.ACCEPTED), 0)
    assert await run_of(guard) == 0


async def test_a_lost_answer_that_times_out_counts_once() -> None:
    """A lost answer counts once; a deadline passed after delivery, not at all."""
    guard = Protection(load_config(GUARDED), FakeClock())
    guard.observe(attempt(AttemptStatus.UNKNOWN), 0)
    guard.observe(attempt(AttemptStatus.TIMED_OUT), 120)
    delivered = Receipt(
        provider="wa", provider_message_id="m", status=ReceiptStatus.DELIVERED, ts=1
    )
    guard.observe(attempt(AttemptStatus.TIMED_OUT, "a2", receipts=[delivered]), 120)
    assert await run_of(guard) == 0


async def test_a_receipt_closes_a_half_open_breaker() -> None:
    """A delivery receipt heard while half-open is the success that closes the breaker."""
    clock = FakeClock(start=0)
    guard = Protection(load_config(GUARDED), clock)
    for i in range(5):
        guard.observe(attempt(AttemptStatus.TRANSIENT, f"a{i}"), 0)
    assert not guard.available("wa", 10)
    await clock.advance(31)
    guard.heard(
        Receipt(provider="wa", provider_message_id="m", status=ReceiptStatus.DELIVERED, ts=31)
    )
    [info] = await guard.breakers.list()
    assert info.state == "closed" and guard.available("wa", 31)


async def test_a_probe_holder_hears_one_answer_before_and_at_the_send() -> None:
    """Half-open with its one probe slot taken: `available` (what the engine's decide asks)
    and `acquire` give the holder the same yes and every other delivery the same no."""
    from cascade_notify import Delivery, Message, Recipient, Step

    config = load_config(
        GUARDED.replace("channel: whatsapp}", "channel: whatsapp, breaker: {probes: 1}}")
    )
    guard = Protection(config, FakeClock(start=0))
    await guard.breakers.open("wa", 30)

    def delivery(delivery_id: str) -> Delivery:
        return Delivery(
            id=delivery_id,
            policy="p",
            steps=(Step(channel="whatsapp", providers=("wa",), timeout=60),),
            created_ts=0,
            expires_ts=3600,
            recipient=Recipient(id="r", whatsapp="+79161234567"),
            message=Message(text="hi"),
        )

    holder, other = delivery("d1"), delivery("d2")
    assert guard.available("wa", 30, holder.id) and await guard.acquire("wa", holder, 30) == 0
    assert guard.available("wa", 31, holder.id) and await guard.acquire("wa", holder, 31) == 0
    assert not guard.available("wa", 31, other.id) and await guard.acquire("wa", other, 31) > 0
    assert not guard.available("wa", 31)  # a delivery not named: a newcomer, kept out


class _YieldingTable(SharedTable):
    """The in-process shared table, but every count yields, as a store's round trip does."""

    async def shared_bump(
        self, key: str, add: float, *, floor: float, now: float, ttl: float
    ) -> float:
        await asyncio.sleep(0)
        return self.bump(key, add, floor=floor, now=now, ttl=ttl)


async def test_a_send_the_breaker_refuses_is_not_counted_by_the_brakes() -> None:
    """Two sends race for a half-open SMS breaker's one probe slot: the one refused at the
    re-check is not counted against the number's hourly limit."""
    from cascade_notify import Delivery, Message, Recipient, Step

    config = load_config("""
providers:
  gw: {type: fake, channel: sms, breaker: {probes: 1}}
policies:
  p:
    brakes: {sms_per_recipient_per_hour: 2}
    steps: [{channel: sms, providers: [gw]}]
""")
    guard = Protection(config, FakeClock(start=0))
    guard.attach(_YieldingTable())
    await guard.breakers.open("gw", 30)
    step = Step(channel="sms", providers=("gw",), timeout=60)

    def delivery(delivery_id: str) -> Delivery:
        return Delivery(
            id=delivery_id,
            policy="p",
            steps=(step,),
            created_ts=0,
            expires_ts=3600,
            recipient=Recipient(id="r", sms="+79161234567"),
            message=Message(text="hi"),
        )

    first, second = await asyncio.gather(
        guard.acquire("gw", delivery("d1"), 30), guard.acquire("gw", delivery("d2"), 30)
    )
    assert first == 0 and second > 0
    assert guard.brake(step, delivery("d3"), 30) is None  # one send counted of the two allowed
