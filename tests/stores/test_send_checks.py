"""What `send()` refuses before anything is stored, and idempotency keys checked, not
trusted: on memory, SQLite and PostgreSQL (issue 13, items 2 to 4)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from cascade_notify import (
    IdempotencyConflict,
    Message,
    Notifier,
    Recipient,
    RecipientError,
    UnknownPolicy,
)
from cascade_notify.models import Signal, SignalKind
from cascade_notify.providers.fake import FakeProvider
from cascade_notify.stores import Store
from cascade_notify.testing import FakeClock

from .conftest import StoreFactory

POLICY = """
providers:
  wa:  {type: fake, channel: whatsapp}
  tg:  {type: fake, channel: telegram}
  sms: {type: fake, channel: sms}
policies:
  service:
    steps:
      - {channel: whatsapp, providers: [wa]}
      - {channel: telegram, providers: [tg], wait_for: accepted}
      - {channel: sms, providers: [sms]}
  urgent:
    steps:
      - {channel: sms, providers: [sms]}
default_policy: service
"""
ANNA = Recipient(id="anna", sms="+79161234567")
PARCEL = Message(text="Your parcel A-1234 has arrived.")


async def _notifier(store: Store, source: str = POLICY, **kwargs: object) -> Notifier:
    notifier = Notifier.from_yaml(
        source,
        store=store,
        clock=FakeClock(1_767_225_600.0),
        worker=False,
        **kwargs,  # type: ignore[arg-type]
    )
    await notifier.start()
    return notifier


async def _nothing_stored(store: Store) -> None:
    assert await store.next_wake() is None


async def test_unreachable_recipient_is_refused_and_nothing_stored(
    store_factory: StoreFactory,
) -> None:
    """No step of the policy has an address: a RecipientError naming the policy's
    channels and the recipient's addresses, and the store holds nothing."""
    notifier = await _notifier(store_factory())
    try:
        nobody = Recipient(id="bob", email="bob@example.com", viber="bob.v")
        with pytest.raises(RecipientError) as caught:
            await notifier.send(nobody, PARCEL)
        text = str(caught.value)
        assert "'bob' cannot be reached by policy 'service'" in text
        assert "steps are on whatsapp, telegram, sms" in text
        assert "addresses on viber, email" in text
        await _nothing_stored(notifier.store)
    finally:
        await notifier.stop()


async def test_opted_out_of_every_reachable_step_is_refused(store_factory: StoreFactory) -> None:
    """An address the recipient opted out of reaches nobody either; the reason is named."""
    notifier = await _notifier(store_factory())
    try:
        out = Recipient(id="cid", sms="+79161234567", opted_out=["sms"])
        with pytest.raises(RecipientError, match=r"addresses on sms \(sms opted out\)"):
            await notifier.send(out, PARCEL, policy="urgent")
        await _nothing_stored(notifier.store)
    finally:
        await notifier.stop()


class _LinkingFake(FakeProvider):
    """A fake that reports address signals, as the Telegram bot does when a customer
    opens it: the notifier then asks the store for linked addresses at each send."""

    signals: ClassVar[bool] = True


async def test_an_address_the_store_knows_makes_a_recipient_reachable(
    store_factory: StoreFactory,
) -> None:
    """A channel whose address comes from the address book (a linked bot) counts: the
    send goes ahead with the linked address filled in."""
    policy = """
providers:
  tg: {type: fake, channel: telegram}
policies:
  bot:
    steps:
      - {channel: telegram, providers: [tg], wait_for: accepted}
"""
    from cascade_notify.policy import load_config

    config = load_config(policy)
    clock = FakeClock(1_767_225_600.0)
    linking = _LinkingFake("tg", config.providers["tg"].settings, clock=clock)
    notifier = Notifier(
        config, store=store_factory(), clock=clock, worker=False, providers={"tg": linking}
    )
    await notifier.start()
    try:
        dora = Recipient(id="dora", email="dora@example.com")
        with pytest.raises(RecipientError, match="steps are on telegram"):
            await notifier.send(dora, PARCEL)
        await notifier.record_signals(
            [
                Signal(
                    kind=SignalKind.LINKED,
                    channel="telegram",
                    address="424242",
                    provider="tg",
                    reason="start",
                    ts=clock.now(),
                    recipient_id="dora",
                )
            ]
        )
        delivery = await notifier.send(dora, PARCEL)
        assert delivery.recipient.telegram == "424242"
    finally:
        await notifier.stop()


async def test_unknown_policy_names_the_known_ones(store_factory: StoreFactory) -> None:
    """A send on a policy the file does not define names the ones it does."""
    notifier = await _notifier(store_factory())
    try:
        with pytest.raises(UnknownPolicy, match="'vip'; this notifier has: service, urgent"):
            await notifier.send(ANNA, PARCEL, policy="vip")
        await _nothing_stored(notifier.store)
    finally:
        await notifier.stop()


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ({"recipient": Recipient(id="anna", sms="+79161234568")}, "recipient"),
        ({"message": Message(text="Your parcel B-5678 has arrived.")}, "message"),
        ({"policy": "urgent"}, "policy"),
    ],
)
async def test_a_key_reused_for_another_send_is_a_conflict(
    store_factory: StoreFactory, change: dict[str, object], differs: str
) -> None:
    """The same key with another recipient, message or policy: IdempotencyConflict
    naming the delivery the key made, which stays as it was."""
    notifier = await _notifier(store_factory())
    try:
        first = await notifier.send(ANNA, PARCEL, idempotency_key="order-1")
        again = {"recipient": ANNA, "message": PARCEL, "policy": None, **change}
        with pytest.raises(IdempotencyConflict) as caught:
            await notifier.send(
                again["recipient"],  # type: ignore[arg-type]
                again["message"],  # type: ignore[arg-type]
                policy=again["policy"],  # type: ignore[arg-type]
                idempotency_key="order-1",
            )
        assert caught.value.delivery_id == first.id
        assert caught.value.key == "order-1"
        assert caught.value.differs.startswith(differs)
        assert first.id in str(caught.value)
        kept = await notifier.get(first.id)
        assert kept.recipient == first.recipient and kept.message == PARCEL
    finally:
        await notifier.stop()


async def test_the_same_key_and_content_return_the_first_delivery(
    store_factory: StoreFactory,
) -> None:
    """A retry with the same key and the same content is the first delivery, however
    the recipient's fields were written (the number normalised alike)."""
    notifier = await _notifier(store_factory())
    try:
        first = await notifier.send(ANNA, PARCEL, idempotency_key="order-2")
        same = Recipient(id="anna", sms="+7 (916) 123-45-67")
        again = await notifier.send(same, Message(text=PARCEL.text), idempotency_key="order-2")
        assert again.id == first.id
    finally:
        await notifier.stop()


async def test_two_stores_racing_with_one_key(store_factory: StoreFactory) -> None:
    """Two notifiers on two store instances (two connections) send with one key at once:
    one delivery is made; the same content gets it, other content a conflict naming it."""
    one, two = await _notifier(store_factory()), await _notifier(store_factory())
    try:
        for round_ in range(5):
            key = f"race-{round_}"
            results = await asyncio.gather(
                one.send(ANNA, PARCEL, idempotency_key=key),
                two.send(ANNA, PARCEL, idempotency_key=key),
            )
            assert results[0].id == results[1].id
            other = Message(text=f"another text {round_}")
            key = f"clash-{round_}"
            outcomes = await asyncio.gather(
                one.send(ANNA, PARCEL, idempotency_key=key),
                two.send(ANNA, other, idempotency_key=key),
                return_exceptions=True,
            )
            made = [o for o in outcomes if not isinstance(o, BaseException)]
            refused = [o for o in outcomes if isinstance(o, IdempotencyConflict)]
            assert len(made) == 1 and len(refused) == 1, outcomes
            assert refused[0].delivery_id == made[0].id
    finally:
        await one.stop()
        await two.stop()


async def test_national_numbers_are_read_in_the_default_region(
    store_factory: StoreFactory,
) -> None:
    """`default_region: RU` makes `8 916 123 45 67` and `8 (916) 123-45-67` +79161234567,
    as stored."""
    notifier = await _notifier(store_factory(), "default_region: RU\n" + POLICY)
    try:
        for written in ("8 916 123 45 67", "8 (916) 123-45-67"):
            local = Recipient(id=f"anna-{len(written)}", sms=written, call=written)
            delivery = await notifier.send(local, PARCEL)
            stored = await notifier.get(delivery.id)
            assert stored.recipient.sms == stored.recipient.call == "+79161234567"
            assert stored.recipient.region == "RU"
    finally:
        await notifier.stop()


async def test_a_national_number_without_a_region_says_how_to_write_it(
    store_factory: StoreFactory,
) -> None:
    """No default_region: a RecipientError naming the field, E.164 and default_region,
    and nothing stored."""
    notifier = await _notifier(store_factory())
    try:
        local = Recipient(id="anna", sms="8 916 123 45 67")
        with pytest.raises(RecipientError) as caught:
            await notifier.send(local, PARCEL)
        assert caught.value.field == "sms"
        assert "E.164" in str(caught.value) and "default_region" in str(caught.value)
        await _nothing_stored(notifier.store)
    finally:
        await notifier.stop()


async def test_a_delivery_made_before_fingerprints_is_not_checked(
    store_factory: StoreFactory,
) -> None:
    """A delivery stored with no fingerprint (by code before the check, or migrated)
    is returned for its key as before, whatever the send brings."""
    from cascade_notify.models import Delivery, new_id

    notifier = await _notifier(store_factory())
    try:
        now = notifier.clock.now()
        old = Delivery(
            id=new_id(),
            policy="service",
            recipient=ANNA,
            message=PARCEL,
            steps=notifier.policy().steps,
            created_ts=now,
            expires_ts=now + 3600,
            wake_ts=now,
            idempotency_key="legacy-1",
        )
        made, created = await notifier.store.create(old)
        assert created and made.fingerprint is None
        again = await notifier.send(ANNA, Message(text="other"), idempotency_key="legacy-1")
        assert again.id == old.id
    finally:
        await notifier.stop()


async def test_the_region_a_number_was_read_in_is_not_part_of_the_key(
    store_factory: StoreFactory,
) -> None:
    """The same E.164 number with or without `region=` is the same recipient for a key."""
    notifier = await _notifier(store_factory())
    try:
        first = await notifier.send(ANNA, PARCEL, idempotency_key="order-3")
        local = Recipient(id="anna", sms="8 916 123-45-67", region="RU")
        assert (await notifier.send(local, PARCEL, idempotency_key="order-3")).id == first.id
    finally:
        await notifier.stop()


_RACER = """
import asyncio, json, os, sys, time
from cascade_notify import IdempotencyConflict, Message, Notifier, Recipient

policy, store, text, go = sys.argv[1:5]

async def main():
    async with Notifier.from_yaml(policy, store=store, worker=False) as notifier:
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.002)
        out = {}
        for n in range(5):
            try:
                made = await notifier.send(
                    Recipient(id="anna", sms="+79161234567"),
                    Message(text=f"{text} {n}"),
                    idempotency_key=f"proc-{n}",
                )
                out[n] = ["made", made.id]
            except IdempotencyConflict as exc:
                out[n] = ["conflict", exc.delivery_id]
        print(json.dumps(out), flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_processes_racing_with_one_key(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two processes send with the same keys and different texts at once: for each key
    one delivery is made, and the other process gets a conflict naming it."""
    folder = tmp_path
    if kind == "sqlite":
        store = f"sqlite:///{folder / 'race.db'}"
    else:
        dsn = request.getfixturevalue("pg_dsn")
        schema = request.getfixturevalue("pg_schema")
        store = f"{dsn}?schema={schema}" if "?" not in dsn else f"{dsn}&schema={schema}"
    (folder / "cascade.yaml").write_text(POLICY)
    go = folder / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(folder / "cascade.yaml"), store, text, str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for text in ("one", "two")
    ]
    try:
        for racer in racers:
            assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
        go.touch()
        results = [json.loads(racer.communicate(timeout=60)[0]) for racer in racers]
    finally:
        for racer in racers:
            racer.kill()
    for n in map(str, range(5)):
        outcomes = sorted(r[n] for r in results)
        assert [o[0] for o in outcomes] == ["conflict", "made"], outcomes
        assert outcomes[0][1] == outcomes[1][1]
