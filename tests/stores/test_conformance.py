"""The Store contract: every store (memory, SQLite, PostgreSQL) passes every test here."""

from __future__ import annotations

import asyncio

import pytest

from cascade_notify.errors import LeaseLost
from cascade_notify.models import (
    Attempt,
    AttemptStatus,
    Delivery,
    DeliveryStatus,
    ReceiptStatus,
    SkippedStep,
)
from cascade_notify.stores import Purgeable, Store
from cascade_notify.stores.base import Claim, Transition
from cascade_notify.stores.memory import ORPHAN_TTL

from .conftest import LEASE, NOW, StoreFactory, attempt, delivery, durable, receipt


async def claim_one(store: Store, now: float = NOW) -> Claim:
    claims = await store.claim(now, limit=10, lease=LEASE)
    assert len(claims) == 1, claims
    return claims[0]


async def accepted(
    store: Store, message_id: str = "m-1", *, wait: float = 600.0
) -> tuple[Delivery, Attempt]:
    """A delivery whose first attempt was accepted as `message_id`, waiting for a receipt."""
    d, _ = await store.create(delivery())
    claim = await claim_one(store)
    a = attempt(d, status=AttemptStatus.ACCEPTED, message_id=message_id)
    await store.commit(claim, Transition(attempts=[a], step=0, wake_ts=NOW + wait))
    return d, a


def same(a: Delivery | None, b: Delivery) -> None:
    assert a is not None
    assert (
        a.id,
        a.policy,
        a.recipient,
        a.message,
        a.steps,
        a.created_ts,
        a.expires_ts,
        a.status,
        a.channel,
        a.step,
        a.skipped,
        a.finished_ts,
        a.wake_ts,
        a.idempotency_key,
        a.unusable,
    ) == (
        b.id,
        b.policy,
        b.recipient,
        b.message,
        b.steps,
        b.created_ts,
        b.expires_ts,
        b.status,
        b.channel,
        b.step,
        b.skipped,
        b.finished_ts,
        b.wake_ts,
        b.idempotency_key,
        b.unusable,
    )
    assert a.attempts == b.attempts


# create and get


async def test_create_then_get_round_trips_everything(store: Store) -> None:
    """What create stored, get gives back, field for field."""
    new = delivery("k-1")
    stored, created = await store.create(new)
    assert created
    same(stored, new)
    same(await store.get(new.id), new)


GONE = {
    "telegram": "the recipient blocked the bot (telegram, 2026-01-01 00:00 UTC)",
    "max": "bot_stopped «Анна» (max)",
}


async def test_unusable_channels_round_trip_through_create_get_and_claim(store: Store) -> None:
    """`Delivery.unusable` is stored with the delivery and read back by get and claim,
    as a copy of its own: changing one a store handed out changes nothing stored."""
    new = delivery(unusable=dict(GONE))
    stored, _ = await store.create(new)
    same(stored, new)
    new.unusable.clear()
    stored.unusable.clear()
    got = await store.get(new.id)
    assert got is not None and got.unusable == GONE
    got.unusable["sms"] = "changed"
    claimed = await claim_one(store)
    assert claimed.delivery.unusable == GONE
    claimed.delivery.unusable.clear()
    again = await store.get(new.id)
    assert again is not None and again.unusable == GONE
    assert again.copy().unusable == GONE and again.copy().unusable is not again.unusable
    plain, _ = await store.create(delivery())
    got = await store.get(plain.id)
    assert got is not None and got.unusable == {}


async def test_get_unknown_is_none(store: Store) -> None:
    """get of an id never created is None."""
    assert await store.get("no-such-delivery") is None


async def test_known_idempotency_key_returns_the_first_delivery(store: Store) -> None:
    """A second create with the same key returns the first delivery and creates nothing."""
    first, _ = await store.create(delivery("order-42"))
    again, created = await store.create(delivery("order-42"))
    assert not created and again.id == first.id
    assert len(await store.claim(NOW, limit=10, lease=LEASE)) == 1


async def test_without_key_every_create_is_new(store: Store) -> None:
    """Deliveries without a key are never merged."""
    results = [await store.create(delivery()) for _ in range(3)]
    assert all(created for _, created in results)
    assert len({d.id for d, _ in results}) == 3


async def test_concurrent_creates_with_one_key_make_one_delivery(
    store: Store, store_factory: StoreFactory
) -> None:
    """Twenty concurrent creates with one key (through two store objects where the store
    is shared between processes) give one delivery, and all twenty see it."""
    stores = [store]
    if type(store).__name__ == "PostgresStore":
        other = store_factory()
        await other.open()
        stores.append(other)
    try:
        results = await asyncio.gather(
            *(stores[i % len(stores)].create(delivery("same-key")) for i in range(20))
        )
    finally:
        for extra in stores[1:]:
            await extra.close()
    assert sum(created for _, created in results) == 1
    assert len({d.id for d, _ in results}) == 1


# claim


async def test_new_delivery_is_due_at_once(store: Store) -> None:
    """A created delivery is claimed at once, with a token and the lease asked for."""
    d, _ = await store.create(delivery())
    claim = await claim_one(store)
    same(claim.delivery, d)
    assert claim.lease_until == NOW + LEASE


async def test_leased_delivery_is_not_claimed_twice(store: Store) -> None:
    """While its lease runs, a delivery is not handed to another claim."""
    await store.create(delivery())
    await claim_one(store)
    assert await store.claim(NOW + LEASE - 1, limit=10, lease=LEASE) == []


async def test_waiting_delivery_is_due_at_its_timer(store: Store) -> None:
    """A delivery waiting until T is not due a moment before T, and due at T."""
    await store.create(delivery())
    claim = await claim_one(store)
    await store.commit(claim, Transition(step=0, wake_ts=NOW + 60))
    assert await store.claim(NOW + 59.9, limit=10, lease=LEASE) == []
    assert (await claim_one(store, NOW + 60)).delivery.wake_ts == NOW + 60


async def test_claim_takes_at_most_limit(store: Store) -> None:
    """claim leases no more than `limit` deliveries; the rest stay due."""
    for _ in range(5):
        await store.create(delivery())
    sizes = [len(await store.claim(NOW, limit=2, lease=LEASE)) for _ in range(4)]
    assert sizes == [2, 2, 1, 0]


async def test_final_delivery_is_never_due(store: Store) -> None:
    """A finished delivery is not claimed, whatever its timer said."""
    await store.create(delivery())
    claim = await claim_one(store)
    await store.commit(
        claim, Transition(status=DeliveryStatus.EXHAUSTED, finished_ts=NOW, wake_ts=NOW)
    )
    assert await store.claim(NOW + 3600, limit=10, lease=LEASE) == []


async def test_expired_lease_is_claimed_again_with_a_new_token(store: Store) -> None:
    """A worker that died holding a lease: the delivery is claimed again once it expires."""
    await store.create(delivery())
    first = await claim_one(store)
    second = await claim_one(store, NOW + LEASE)
    assert second.token > first.token
    assert second.lease_until == NOW + 2 * LEASE


async def test_delivery_left_mid_send_is_claimed_after_lease(store: Store) -> None:
    """The engine's pre-send write (attempt `sending`, lease kept) resumes after a crash."""
    d, _ = await store.create(delivery())
    claim = await claim_one(store)
    sending = attempt(d)
    await store.commit(claim, Transition(attempts=[sending], step=0, wake_ts=NOW, release=False))
    assert await store.claim(NOW + LEASE - 1, limit=10, lease=LEASE) == []
    again = await claim_one(store, NOW + LEASE)
    assert again.delivery.attempts == [sending]


# fencing


async def test_commit_after_takeover_is_refused_and_writes_nothing(store: Store) -> None:
    """A worker paused past its lease gets LeaseLost and its write is dropped whole."""
    d, _ = await store.create(delivery())
    stale = await claim_one(store)
    fresh = await claim_one(store, NOW + LEASE)
    with pytest.raises(LeaseLost):
        await store.commit(
            stale,
            Transition(
                attempts=[attempt(d)], step=1, status=DeliveryStatus.EXHAUSTED, finished_ts=NOW
            ),
        )
    after = await store.get(d.id)
    assert after is not None and after.attempts == [] and after.step == 0
    assert after.status is DeliveryStatus.PENDING
    await store.commit(fresh, Transition(step=0, wake_ts=NOW + 600))


async def test_commit_after_cancel_is_refused(store: Store) -> None:
    """Cancelling fences out the worker holding the delivery."""
    d, _ = await store.create(delivery())
    claim = await claim_one(store)
    await store.cancel(d.id, NOW + 1)
    with pytest.raises(LeaseLost):
        await store.commit(claim, Transition(attempts=[attempt(d)], step=0, wake_ts=NOW))
    after = await store.get(d.id)
    assert after is not None and after.attempts == []
    assert after.status is DeliveryStatus.CANCELLED


# commit


async def test_commit_upserts_attempts_by_id(store: Store) -> None:
    """The same attempt written twice (sending, then accepted) is one attempt, updated."""
    d, _ = await store.create(delivery())
    claim = await claim_one(store)
    sending = attempt(d)
    await store.commit(claim, Transition(attempts=[sending], step=0, wake_ts=NOW, release=False))
    done = sending.copy()
    done.status, done.provider_message_id, done.cost = AttemptStatus.ACCEPTED, "m-9", 0.5
    second = attempt(d, provider="gw1", step=1, status=AttemptStatus.FAILED)
    await store.commit(claim, Transition(attempts=[done, second], step=1, wake_ts=NOW + 60))
    after = await store.get(d.id)
    assert after is not None and after.attempts == [done, second]


async def test_sms_billing_round_trips(store: Store) -> None:
    """An attempt's segments, encoding, cost and currency are stored and read back; the
    delivery's cost is the sum of its attempts' (0 with none billed)."""
    d, _ = await store.create(delivery())
    claim = await claim_one(store)
    free = attempt(d, provider="gw1", status=AttemptStatus.TRANSIENT)
    billed = attempt(d, provider="gw2", status=AttemptStatus.ACCEPTED)
    billed.provider_message_id, billed.cost, billed.currency = "m-1", 0.15, "EUR"
    billed.segments, billed.encoding = 3, "UCS-2"
    await store.commit(claim, Transition(attempts=[free], step=0, wake_ts=NOW, release=False))
    before = await store.get(d.id)
    assert before is not None and before.cost == 0
    await store.commit(claim, Transition(attempts=[billed], step=0, wake_ts=NOW + 60))
    after = await store.get(d.id)
    assert after is not None
    assert after.attempts == [free, billed]
    stored = after.attempts[1]
    assert (stored.segments, stored.encoding, stored.cost, stored.currency) == (
        3, "UCS-2", 0.15, "EUR",
    )  # fmt: skip
    assert after.attempts[0].segments is None and after.attempts[0].currency is None
    assert after.cost == pytest.approx(0.15)


async def test_a_reported_price_on_a_receipt_wins(store: Store) -> None:
    """A receipt carrying the gateway's price makes it the attempt's cost, over the
    estimate written with the attempt, also after the writer commits its older copy."""
    d, a = await accepted(store, "m-1")
    claim = await claim_one(store, now=NOW + 600)
    estimate = a.copy()
    estimate.cost, estimate.currency = 0.5, "RUB"
    await store.commit(claim, Transition(attempts=[estimate], step=0, wake_ts=NOW + 600))
    await store.record_receipts([receipt("m-1", ReceiptStatus.SENT, cost=0.7)], NOW + 5)
    after = await store.get(d.id)
    assert after is not None
    assert (after.attempts[0].cost, after.attempts[0].currency) == (0.7, "RUB")
    assert after.attempts[0].receipts[0].cost == 0.7
    assert after.cost == pytest.approx(0.7)
    stale = estimate.copy()  # the writer's copy from before the receipt, written again
    stale.status = AttemptStatus.TIMED_OUT
    await store.commit(claim, Transition(attempts=[stale], step=1, wake_ts=NOW + 601))
    again = await store.get(d.id)
    assert again is not None and again.attempts[0].cost == 0.7


async def test_a_reported_price_on_an_orphan_receipt_wins(store: Store) -> None:
    """A priced receipt heard before its attempt was known sets the cost once attached."""
    early = receipt("m-2", ReceiptStatus.DELIVERED, cost=1.25)
    await store.record_receipts([early], NOW)  # before the attempt is known: kept aside
    d2, _ = await accepted(store, "m-2")
    later = await store.get(d2.id)
    assert later is not None and later.attempts[0].cost == 1.25


async def test_commit_writes_steps_skips_and_the_end(store: Store) -> None:
    """Skipped steps are appended; status, channel and finish time are written together."""
    d, _ = await store.create(delivery())
    claim = await claim_one(store)
    skip = SkippedStep(step=0, channel="whatsapp", reason="quiet_hours", ts=NOW, detail="23:00")
    await store.commit(claim, Transition(skipped=[skip], step=1, wake_ts=NOW, release=False))
    await store.commit(
        claim,
        Transition(status=DeliveryStatus.DELIVERED, channel="sms", finished_ts=NOW + 5, step=1),
    )
    after = await store.get(d.id)
    assert after is not None
    assert (
        after.skipped,
        after.step,
        after.status,
        after.channel,
        after.finished_ts,
        after.wake_ts,
    ) == ([skip], 1, DeliveryStatus.DELIVERED, "sms", NOW + 5, None)


async def test_commit_keeps_receipts_heard_during_the_lease(store: Store) -> None:
    """A receipt recorded while a worker held the delivery survives that worker's write."""
    d, a = await accepted(store)
    claim = await claim_one(store, NOW + 600)
    await store.record_receipts([receipt("m-1", now=NOW + 601)], NOW + 601)
    closing = a.copy()
    closing.status, closing.finished_ts = AttemptStatus.TIMED_OUT, NOW + 602
    await store.commit(claim, Transition(attempts=[closing], step=0, wake_ts=NOW + 602))
    after = await store.get(d.id)
    assert after is not None
    [stored] = after.attempts
    assert [r.receipt_id for r in stored.receipts] == ["m-1:delivered"]
    assert stored.status is AttemptStatus.DELIVERED
    assert (await claim_one(store, NOW + 602)).delivery.id == d.id  # and it is looked at


# receipts


async def test_receipt_attaches_by_provider_message_id_and_pokes(store: Store) -> None:
    """A receipt finds its attempt by (provider, message id), moves its status on, and
    makes the waiting delivery due at once."""
    d, _ = await accepted(store)
    [result] = await store.record_receipts([receipt("m-1", now=NOW + 5)], NOW + 5)
    assert (result.delivery_id, result.duplicate) == (d.id, False)
    claim = await claim_one(store, NOW + 5)
    [stored] = claim.delivery.attempts
    assert stored.status is AttemptStatus.DELIVERED
    assert stored.receipts == [receipt("m-1", now=NOW + 5)]


async def test_same_message_id_of_another_provider_is_not_matched(store: Store) -> None:
    """Message ids are only unique per provider."""
    await accepted(store)
    [result] = await store.record_receipts([receipt("m-1", provider="tg")], NOW)
    assert result.delivery_id is None


async def test_duplicate_receipt_changes_nothing(store: Store) -> None:
    """The same receipt twice is recorded once and reported as a duplicate."""
    d, _ = await accepted(store)
    first = await store.record_receipts([receipt("m-1")], NOW)
    claim = await claim_one(store)
    await store.commit(claim, Transition(step=0, wake_ts=NOW + 600))
    again = await store.record_receipts([receipt("m-1"), receipt("m-1")], NOW + 1)
    assert [r.duplicate for r in [*first, *again]] == [False, True, True]
    after = await store.get(d.id)
    assert after is not None and len(after.attempts[0].receipts) == 1
    assert await store.claim(NOW + 1, limit=10, lease=LEASE) == []  # no new poke


async def test_receipts_out_of_order_keep_the_best_status(store: Store) -> None:
    """`read` before `delivered`, and a `failed` after either, leave the attempt read."""
    d, _ = await accepted(store)
    await store.record_receipts(
        [
            receipt("m-1", ReceiptStatus.READ),
            receipt("m-1", ReceiptStatus.DELIVERED),
            receipt("m-1", ReceiptStatus.FAILED, code="x"),
        ],
        NOW,
    )
    after = await store.get(d.id)
    assert after is not None
    assert after.attempts[0].status is AttemptStatus.READ
    assert len(after.attempts[0].receipts) == 3


async def test_receipt_before_the_message_id_is_kept_and_attached(store: Store) -> None:
    """A receipt that beats the provider's answer is kept, then attached when the attempt
    gets that message id, and the delivery is due again."""
    d, _ = await store.create(delivery())
    claim = await claim_one(store)
    sending = attempt(d)
    await store.commit(claim, Transition(attempts=[sending], step=0, wake_ts=NOW, release=False))
    early = await store.record_receipts([receipt("m-7", now=NOW + 1)], NOW + 1)
    again = await store.record_receipts([receipt("m-7", now=NOW + 1)], NOW + 1)
    assert [(r.delivery_id, r.duplicate) for r in [*early, *again]] == [(None, False), (None, True)]
    done = sending.copy()
    done.status, done.provider_message_id = AttemptStatus.ACCEPTED, "m-7"
    await store.commit(claim, Transition(attempts=[done], step=0, wake_ts=NOW + 600))
    again_claim = await claim_one(store, NOW + 2)
    [stored] = again_claim.delivery.attempts
    assert stored.status is AttemptStatus.DELIVERED
    assert [r.receipt_id for r in stored.receipts] == ["m-7:delivered"]


async def test_receipt_naming_our_attempt_finds_it_without_a_message_id(store: Store) -> None:
    """A receipt that echoes our attempt id finds its attempt though the send's answer, and
    so the provider's message id, was lost; the attempt learns the message id from it."""
    d, _ = await store.create(delivery())
    claim = await claim_one(store)
    lost = attempt(d, status=AttemptStatus.UNKNOWN)
    await store.commit(claim, Transition(attempts=[lost], step=0, wake_ts=NOW + 600))
    [first] = await store.record_receipts([receipt("m-5", attempt_id=lost.id)], NOW + 1)
    [later] = await store.record_receipts([receipt("m-5", ReceiptStatus.READ)], NOW + 2)
    assert [(r.delivery_id, r.duplicate) for r in (first, later)] == [(d.id, False)] * 2
    [stored] = (await claim_one(store, NOW + 2)).delivery.attempts
    assert stored.status is AttemptStatus.READ
    assert [r.attempt_id for r in stored.receipts] == [lost.id, None]


async def test_receipt_naming_another_providers_attempt_is_not_matched(store: Store) -> None:
    """An echoed attempt id counts only for the provider that made the attempt."""
    d, _ = await store.create(delivery())
    claim = await claim_one(store)
    lost = attempt(d, status=AttemptStatus.UNKNOWN)
    await store.commit(claim, Transition(attempts=[lost], step=0, wake_ts=NOW + 600))
    [result] = await store.record_receipts(
        [receipt("m-6", provider="tg", attempt_id=lost.id)], NOW + 1
    )
    assert result.delivery_id is None


async def test_orphan_receipts_expire(store: Store) -> None:
    """A receipt for an unknown message is not kept forever."""
    d, _ = await store.create(delivery())
    claim = await claim_one(store)
    await store.record_receipts([receipt("m-8")], NOW)
    await store.record_receipts([receipt("m-other")], NOW + ORPHAN_TTL + 1)  # tidies up
    a = attempt(d, status=AttemptStatus.ACCEPTED, message_id="m-8")
    await store.commit(claim, Transition(attempts=[a], step=0, wake_ts=NOW + 600))
    after = await store.get(d.id)
    assert after is not None and after.attempts[0].receipts == []


async def test_receipt_for_a_finished_delivery_is_recorded_without_waking_it(
    store: Store,
) -> None:
    """A late receipt is kept on its attempt (history), but a final delivery stays asleep."""
    d, _ = await accepted(store)
    claim = await claim_one(store, NOW + 600)
    await store.commit(
        claim, Transition(status=DeliveryStatus.EXHAUSTED, finished_ts=NOW + 600, step=2)
    )
    [result] = await store.record_receipts([receipt("m-1", now=NOW + 700)], NOW + 700)
    assert (result.delivery_id, result.duplicate) == (d.id, False)
    after = await store.get(d.id)
    assert after is not None and after.status is DeliveryStatus.EXHAUSTED
    assert after.attempts[0].status is AttemptStatus.DELIVERED
    assert await store.claim(NOW + 700, limit=10, lease=LEASE) == []
    assert await store.next_wake() is None


# cancel


async def test_cancel_ends_a_pending_delivery_and_abandons_open_attempts(store: Store) -> None:
    """cancel makes a pending delivery cancelled and closes what was still open."""
    d, a = await accepted(store)
    cancelled = await store.cancel(d.id, NOW + 10)
    assert cancelled is not None and cancelled.status is DeliveryStatus.CANCELLED
    assert cancelled.finished_ts == NOW + 10
    [closed] = cancelled.attempts
    assert (closed.id, closed.status, closed.finished_ts) == (
        a.id,
        AttemptStatus.ABANDONED,
        NOW + 10,
    )
    same(await store.get(d.id), cancelled)
    assert await store.claim(NOW + 700, limit=10, lease=LEASE) == []


async def test_cancel_of_a_final_delivery_changes_nothing(store: Store) -> None:
    """A finished delivery is returned as it is."""
    d, _ = await store.create(delivery())
    claim = await claim_one(store)
    await store.commit(claim, Transition(status=DeliveryStatus.EXHAUSTED, finished_ts=NOW))
    result = await store.cancel(d.id, NOW + 5)
    assert result is not None and result.status is DeliveryStatus.EXHAUSTED
    assert result.finished_ts == NOW


async def test_cancel_of_an_unknown_delivery_is_none(store: Store) -> None:
    """cancel of an id never created is None."""
    assert await store.cancel("no-such-delivery", NOW) is None


# next_wake


async def test_next_wake_is_none_with_nothing_pending(store: Store) -> None:
    """An empty store has nothing to wake for."""
    assert await store.next_wake() is None


async def test_next_wake_is_now_for_a_new_delivery(store: Store) -> None:
    """A delivery just created is due already."""
    await store.create(delivery())
    wake = await store.next_wake()
    assert wake is not None and wake <= NOW


async def test_next_wake_is_the_earliest_timer(store: Store) -> None:
    """Of several waiting deliveries, the earliest timer counts."""
    for wait in (300, 60, 900):
        await store.create(delivery())
        claim = await claim_one(store)
        await store.commit(claim, Transition(step=0, wake_ts=NOW + wait))
    assert await store.next_wake() == NOW + 60


async def test_next_wake_counts_a_lease_expiry(store: Store) -> None:
    """A delivery held by a worker is due again when the lease runs out, if not before."""
    await store.create(delivery())
    claim = await claim_one(store)
    assert await store.next_wake() == claim.lease_until


# purge and durability


async def test_purge_removes_old_finished_deliveries_only(store: Store) -> None:
    """purge deletes deliveries final for longer than asked, and nothing pending."""
    assert isinstance(store, Purgeable)
    old, _ = await store.create(delivery("old"))
    recent, _ = await store.create(delivery())
    pending, _ = await store.create(delivery())
    claims = {c.delivery.id: c for c in await store.claim(NOW, limit=10, lease=LEASE)}
    for d, finished in ((old, NOW), (recent, NOW + 86400)):
        await store.commit(
            claims[d.id], Transition(status=DeliveryStatus.EXHAUSTED, finished_ts=finished)
        )
    assert await store.purge(30 * 86400, NOW + 31 * 86400 - 1) == 1
    assert await store.get(old.id) is None
    assert await store.get(recent.id) is not None and await store.get(pending.id) is not None
    assert (await store.create(delivery("old")))[1]  # its key is free again


async def test_receipt_for_a_purged_delivery_is_unknown(store: Store) -> None:
    """After purge, a very late receipt matches nothing (and is acknowledged as unknown)."""
    assert isinstance(store, Purgeable)
    _d, _ = await accepted(store)
    claim = await claim_one(store, NOW + 600)
    await store.commit(claim, Transition(status=DeliveryStatus.EXHAUSTED, finished_ts=NOW))
    assert await store.purge(0, NOW + 1) == 1
    [result] = await store.record_receipts([receipt("m-1")], NOW + 2)
    assert result.delivery_id is None


async def test_state_survives_reopening(store: Store, store_factory: StoreFactory) -> None:
    """What a durable store said it wrote is there after closing and opening it again."""
    durable(store)
    d, _a = await accepted(store)
    await store.record_receipts([receipt("m-1")], NOW + 1)
    expected = await store.get(d.id)
    await store.close()
    reopened = store_factory()
    await reopened.open()
    try:
        assert expected is not None
        same(await reopened.get(d.id), expected)
        assert (await claim_one(reopened, NOW + 1)).delivery.id == d.id
    finally:
        await reopened.close()
        await store.open()  # the fixture closes it


async def test_unusable_channels_survive_reopening(
    store: Store, store_factory: StoreFactory
) -> None:
    """`Delivery.unusable` is on disk: get and claim read it after a reopen."""
    durable(store)
    marked, _ = await store.create(delivery(unusable=dict(GONE)))
    await store.close()
    reopened = store_factory()
    await reopened.open()
    try:
        same(await reopened.get(marked.id), marked)
        assert (await claim_one(reopened)).delivery.unusable == GONE
    finally:
        await reopened.close()
        await store.open()  # the fixture closes it


async def test_attempts_of_one_write_keep_the_order_it_gives(store: Store) -> None:
    """New attempts written together are stored in the transition's order, whatever
    their ids' order (ids sort by time, and two made in one millisecond sort at random)."""
    created, _ = await store.create(delivery())
    claim = await claim_one(store)
    first, second = attempt(created), attempt(created, provider="tg")
    first.id, second.id = "f" + first.id[1:], "0" + second.id[1:]  # second's id sorts first
    await store.commit(claim, Transition(attempts=[first, second], wake_ts=NOW + 60))
    stored = await store.get(created.id)
    assert stored is not None
    assert [a.id for a in stored.attempts] == [first.id, second.id]
