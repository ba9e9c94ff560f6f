"""The AddressBook contract: every store (memory, SQLite, PostgreSQL) passes every test here."""

from __future__ import annotations

import asyncio
import math

import pytest

from cascade_notify.errors import StoreError
from cascade_notify.models import Signal, SignalKind
from cascade_notify.stores import AddressBook, Purgeable, SignalOutcome, Store
from cascade_notify.stores._addresses import MAX_NAME, MAX_REASON, SPENT_TTL

from .conftest import NOW, StoreFactory, durable


def gone(
    address: str = "100200300",
    *,
    channel: str = "telegram",
    ts: float = NOW,
    reason: str = "blocked",
    recipient_id: str | None = None,
) -> Signal:
    return Signal(
        kind=SignalKind.GONE,
        channel=channel,
        address=address,
        provider="tg",
        reason=reason,
        ts=ts,
        recipient_id=recipient_id,
    )


def linked(
    recipient_id: str = "anna",
    address: str = "100200300",
    *,
    channel: str = "telegram",
    ts: float = NOW,
    token: str | None = None,
) -> Signal:
    return Signal(
        kind=SignalKind.LINKED,
        channel=channel,
        address=address,
        provider="tg",
        reason="start",
        ts=ts,
        recipient_id=recipient_id,
        token=token,
    )


def book(store: Store) -> AddressBook:
    assert isinstance(store, AddressBook)
    return store


async def state(store: Store, *recipients: str) -> tuple[object, ...]:
    """Everything the book says about these recipients and the usual addresses."""
    asked = [(c, a) for c in ("telegram", "max", "viber") for a in ("100200300", "200", "300")]
    found = await book(store).unusable(asked)
    return (
        sorted((k, s.reason, s.ts, s.recipient_id) for k, s in found.items()),
        [await book(store).linked(r) for r in recipients],
    )


async def test_every_store_is_an_address_book(store: Store) -> None:
    """The capability is declared by every store."""
    assert isinstance(store, AddressBook)


async def test_gone_makes_the_address_unusable_with_its_signal(store: Store) -> None:
    """A gone signal: that (channel, address) is unusable, and says which signal made it so."""
    signal = gone(recipient_id="anna")
    await book(store).record_signals([signal])
    assert await book(store).unusable([("telegram", "100200300")]) == {
        ("telegram", "100200300"): signal
    }
    assert await book(store).unusable([("max", "100200300"), ("telegram", "1")]) == {}


async def test_unusable_answers_for_many_addresses_at_once(store: Store) -> None:
    """One question about hundreds of addresses: exactly the gone ones, however many,
    with repeats and addresses no store could hold among them."""
    await book(store).record_signals(
        [gone(str(n), ts=NOW + n) for n in range(0, 600, 3)]
        + [linked(f"r{n}", str(n)) for n in range(1, 600, 3)]
    )
    asked = [("telegram", str(n)) for n in range(600)]
    asked += [("telegram", "0"), ("telegram", "bad\x00"), ("Not a channel", "3"), ("max", "")]
    found = await book(store).unusable(asked)
    assert sorted(found) == sorted(("telegram", str(n)) for n in range(0, 600, 3))
    assert found[("telegram", "9")].ts == NOW + 9
    assert await book(store).unusable([]) == {}


async def test_linked_gives_the_recipients_addresses(store: Store) -> None:
    """Links on several channels are the recipient's addresses, channel by channel."""
    await book(store).record_signals(
        [linked("anna", "100200300"), linked("anna", "200", channel="max"), linked("ivan", "300")]
    )
    assert await book(store).linked("anna") == {"telegram": "100200300", "max": "200"}
    assert await book(store).linked("ivan") == {"telegram": "300"}
    assert await book(store).linked("nobody") == {}


async def test_a_link_clears_an_earlier_gone(store: Store) -> None:
    """The customer blocked the bot, then linked again: usable and linked."""
    await book(store).record_signals([gone(ts=NOW), linked(ts=NOW + 1)])
    assert await book(store).unusable([("telegram", "100200300")]) == {}
    assert await book(store).linked("anna") == {"telegram": "100200300"}


async def test_gone_after_a_link_ends_the_link(store: Store) -> None:
    """A linked address that goes is unusable and no longer among the recipient's."""
    await book(store).record_signals([linked(ts=NOW)])
    await book(store).record_signals([gone(ts=NOW + 1)])
    assert set(await book(store).unusable([("telegram", "100200300")])) == {
        ("telegram", "100200300")
    }
    assert await book(store).linked("anna") == {}


async def test_a_link_replaces_the_recipients_older_address_on_that_channel(store: Store) -> None:
    """A new link on a channel replaces the recipient's old one there, and nothing else."""
    await book(store).record_signals(
        [
            linked("anna", "200", ts=NOW),
            linked("anna", "200", channel="max", ts=NOW),
            linked("ivan", "300", ts=NOW),
        ]
    )
    await book(store).record_signals([linked("anna", "100200300", ts=NOW + 1)])
    assert await book(store).linked("anna") == {"telegram": "100200300", "max": "200"}
    assert await book(store).linked("ivan") == {"telegram": "300"}


async def test_a_link_of_an_address_to_another_recipient_moves_it(store: Store) -> None:
    """An address belongs to one recipient per channel: the later link takes it."""
    await book(store).record_signals([linked("anna", ts=NOW), linked("ivan", ts=NOW + 1)])
    assert await book(store).linked("anna") == {}
    assert await book(store).linked("ivan") == {"telegram": "100200300"}


async def test_an_older_signal_does_not_overwrite_a_newer_one(store: Store) -> None:
    """Signals arrive late: one older than what is stored for its address changes nothing."""
    await book(store).record_signals([gone("200", ts=NOW + 10)])
    await book(store).record_signals([linked("anna", "200", ts=NOW + 5)])
    assert set(await book(store).unusable([("telegram", "200")])) == {("telegram", "200")}
    assert await book(store).linked("anna") == {}
    await book(store).record_signals([linked("ivan", "300", ts=NOW + 10)])
    await book(store).record_signals([gone("300", ts=NOW + 9)])
    assert await book(store).unusable([("telegram", "300")]) == {}
    assert await book(store).linked("ivan") == {"telegram": "300"}


async def test_an_older_link_does_not_replace_a_newer_one(store: Store) -> None:
    """A late link to the recipient's previous address leaves the newer address linked."""
    await book(store).record_signals([linked("anna", "300", ts=NOW + 10)])
    await book(store).record_signals([linked("anna", "200", ts=NOW + 5)])
    assert await book(store).linked("anna") == {"telegram": "300"}


async def test_signals_of_one_call_apply_in_order(store: Store) -> None:
    """Within one call each signal sees those before it: gone, linked, gone again."""
    await book(store).record_signals(
        [
            gone("200", ts=NOW),
            linked("anna", "200", ts=NOW + 1),
            gone("200", ts=NOW + 2),
            linked("ivan", "300", ts=NOW),
            linked("ivan", "100200300", ts=NOW + 1),
        ]
    )
    assert set(await book(store).unusable([("telegram", "200")])) == {("telegram", "200")}
    assert await book(store).linked("anna") == {}
    assert await book(store).linked("ivan") == {"telegram": "100200300"}


async def test_at_one_time_gone_outranks_linked_in_either_order(store: Store) -> None:
    """Two signals with the same ts: the address is gone, whichever came first."""
    await book(store).record_signals([linked("anna", "200"), gone("200")])
    await book(store).record_signals([gone("300"), linked("ivan", "300")])
    found = await book(store).unusable([("telegram", "200"), ("telegram", "300")])
    assert set(found) == {("telegram", "200"), ("telegram", "300")}


async def test_repeated_signals_change_nothing(store: Store) -> None:
    """Recording the same signals again (a provider's retried webhook) changes nothing,
    also a repeated link to an address the recipient has since replaced."""
    signals = [
        linked("anna", "200", ts=NOW),
        gone("300", ts=NOW, recipient_id="ivan"),
        linked("anna", "100200300", ts=NOW + 1),
        linked("anna", "200", channel="max", ts=NOW),
        gone("200", channel="max", ts=NOW + 2),
    ]
    await book(store).record_signals(signals)
    before = await state(store, "anna", "ivan")
    await book(store).record_signals(signals)
    for signal in signals:
        await book(store).record_signals([signal])
    assert await state(store, "anna", "ivan") == before
    assert await book(store).linked("anna") == {"telegram": "100200300"}


async def test_forget_erases_the_recipient_and_its_addresses(store: Store) -> None:
    """forget: the recipient's links, gone marks on its linked addresses and gone marks
    naming it go, and how many is said; everyone else's entries stay."""
    await book(store).record_signals(
        [
            linked("anna", "100200300", ts=NOW),
            linked("anna", "200", channel="max", ts=NOW),
            gone("200", channel="max", ts=NOW + 1),  # the provider did not say whose
            gone("300", channel="viber", ts=NOW, recipient_id="anna"),
            linked("ivan", "300", ts=NOW),
            gone("200", ts=NOW),
        ]
    )
    assert await book(store).forget("anna") == 3
    assert await book(store).linked("anna") == {}
    asked = [("max", "200"), ("viber", "300"), ("telegram", "200")]
    assert set(await book(store).unusable(asked)) == {("telegram", "200")}
    assert await book(store).linked("ivan") == {"telegram": "300"}
    assert await book(store).forget("anna") == 0
    assert await book(store).forget("bad\x00id") == 0
    assert await book(store).linked("bad\x00id") == {}


@pytest.mark.parametrize(
    ("signal", "problem"),
    [
        (gone("bad\x00address"), "address must be"),
        (gone("x" * (MAX_NAME + 1)), "address must be"),
        (gone(""), "address must be"),
        (gone("\ud800"), "address must be"),
        (gone(channel="Tele gram"), "'Tele gram' is not a channel name"),
        (gone(ts=math.nan), "ts must be a finite number"),
        (gone(recipient_id="anna\n"), "recipient_id must be"),
        (linked(token="bad\x00token"), "token must be"),
        (
            Signal(
                kind=SignalKind.GONE,
                channel="telegram",
                address="1",
                provider="tg",
                reason="blocked",
                ts=NOW,
                token="t",
            ),
            "only a linked signal carries a token",
        ),
        (
            Signal(
                kind=SignalKind.LINKED,
                channel="telegram",
                address="1",
                provider="tg",
                reason="start",
                ts=NOW,
            ),
            "a linked signal needs a recipient_id",
        ),
    ],
)
async def test_a_signal_no_store_can_keep_is_refused_and_nothing_is_written(
    store: Store, signal: Signal, problem: str
) -> None:
    """A bad signal is a StoreError naming it and why; the valid ones with it are not kept."""
    with pytest.raises(StoreError, match=f"signal 1: {problem}"):
        await book(store).record_signals([gone("200"), signal])
    assert await book(store).unusable([("telegram", "200")]) == {}


async def test_a_reason_is_kept_short_and_printable(store: Store) -> None:
    """A provider's long or odd reason is cut to MAX_REASON characters, without control
    characters; the signal is kept."""
    await book(store).record_signals([gone("200", reason="no\x00pe\n" + "é" * 500)])
    [signal] = (await book(store).unusable([("telegram", "200")])).values()
    assert signal.reason == "no pe " + "é" * (MAX_REASON - 6)


async def test_concurrent_links_of_one_recipient_leave_one(
    store: Store, store_factory: StoreFactory
) -> None:
    """Links of one recipient recorded at once (through two store objects where the store
    is shared between processes): the latest stands, alone."""
    stores = [store]
    if type(store).__name__ == "PostgresStore":
        other = store_factory()
        await other.open()
        stores.append(other)
    try:
        await asyncio.gather(
            *(
                book(stores[n % len(stores)]).record_signals([linked("anna", str(n), ts=NOW + n)])
                for n in range(20)
            )
        )
    finally:
        for extra in stores[1:]:
            await extra.close()
    assert await book(store).linked("anna") == {"telegram": "19"}


async def test_the_address_book_survives_reopening(
    store: Store, store_factory: StoreFactory
) -> None:
    """What a durable store recorded is there after closing and opening it again."""
    durable(store)
    await book(store).record_signals(
        [linked("anna", "200"), gone("300", recipient_id="ivan", reason="unsubscribed")]
    )
    before = await state(store, "anna", "ivan")
    await store.close()
    reopened = store_factory()
    await reopened.open()
    try:
        assert await state(reopened, "anna", "ivan") == before
        assert await book(reopened).linked("anna") == {"telegram": "200"}
    finally:
        await reopened.close()
        await store.open()  # the fixture closes it


async def test_record_says_what_each_signal_did(store: Store) -> None:
    """Recorded, or unchanged (a repeat, an older one): one outcome per signal, in order."""
    done = await book(store).record_signals(
        [linked("anna", "1", ts=NOW + 1), linked("anna", "1", ts=NOW + 1), gone("1", ts=NOW)]
    )
    assert done == [SignalOutcome.RECORDED, SignalOutcome.UNCHANGED, SignalOutcome.UNCHANGED]
    assert await book(store).record_signals([]) == []


async def test_a_link_token_links_once(store: Store) -> None:
    """A second link with a token seen before is a replay: nothing changes, whatever it
    names, in the same call or a later one; another token links as usual."""
    first = await book(store).record_signals(
        [linked("anna", "1", token="tok-1"), linked("anna", "2", ts=NOW + 1, token="tok-1")]
    )
    later = await book(store).record_signals([linked("anna", "3", ts=NOW + 2, token="tok-1")])
    assert first == [SignalOutcome.RECORDED, SignalOutcome.REPLAYED]
    assert later == [SignalOutcome.REPLAYED]
    assert await book(store).linked("anna") == {"telegram": "1"}
    assert await book(store).record_signals([linked("anna", "4", ts=NOW + 3, token="tok-2")]) == [
        SignalOutcome.RECORDED
    ]
    assert await book(store).linked("anna") == {"telegram": "4"}


async def test_a_spent_token_outlives_forget_and_goes_with_purge(store: Store) -> None:
    """`forget` leaves the spent tokens (a digest each: nothing of the recipient), so an
    old link still links nothing; `purge` drops them once no token can still be alive."""
    await book(store).record_signals([linked("anna", "1", token="tok-1")])
    await book(store).forget("anna")
    assert await book(store).record_signals([linked("anna", "1", ts=NOW + 1, token="tok-1")]) == [
        SignalOutcome.REPLAYED
    ]
    assert await book(store).linked("anna") == {}
    if isinstance(store, Purgeable):
        await store.purge(86400.0, NOW + SPENT_TTL + 1)
        again = await book(store).record_signals([linked("anna", "1", ts=NOW + 2, token="tok-1")])
        assert again == [SignalOutcome.RECORDED]


async def test_concurrent_replays_of_one_token_link_once(
    store: Store, store_factory: StoreFactory
) -> None:
    """The same token recorded at once for different addresses (two processes where the
    store is shared): exactly one links."""
    stores = [store]
    if type(store).__name__ == "PostgresStore":
        other = store_factory()
        await other.open()
        stores.append(other)
    try:
        done = await asyncio.gather(
            *(
                book(stores[n % len(stores)]).record_signals(
                    [linked("anna", str(n), ts=NOW + n, token="tok-same")]
                )
                for n in range(10)
            )
        )
    finally:
        for extra in stores[1:]:
            await extra.close()
    assert sorted(outcome for [outcome] in done).count(SignalOutcome.RECORDED) == 1
    assert len(await book(store).linked("anna")) == 1


async def test_known_gives_the_latest_entry_per_channel_linked_or_gone(store: Store) -> None:
    """`known`: per channel the recipient's latest entry, a gone one included (its address
    blocked the bot since), with its reason; nothing for another recipient."""
    await book(store).record_signals(
        [
            linked("anna", "100", ts=NOW),
            gone("100", ts=NOW + 1),  # the provider did not say whose: still anna's
            linked("anna", "200", channel="max", ts=NOW),
            linked("ivan", "300", ts=NOW),
        ]
    )
    known = await book(store).known("anna")
    assert {c: (s.kind, s.address, s.reason) for c, s in known.items()} == {
        "telegram": (SignalKind.GONE, "100", "blocked"),
        "max": (SignalKind.LINKED, "200", "start"),
    }
    await book(store).record_signals([linked("anna", "101", ts=NOW + 2)])
    assert (await book(store).known("anna"))["telegram"].address == "101"
    assert await book(store).known("nobody") == {}
    assert await book(store).known("bad\x00id") == {}
