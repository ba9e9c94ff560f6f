"""The SQL stores' encoding knows every field of the records it stores."""

from __future__ import annotations

import json
from dataclasses import fields

from cascade_notify.models import (
    Attempt,
    Delivery,
    Message,
    Receipt,
    Recipient,
    SkippedStep,
    Step,
    WaitFor,
)
from cascade_notify.stores._codec import (
    ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS,
    RECEIPT_COLUMNS,
    Unchanging,
    dumps,
    encode_steps,
    skipped_from_dict,
    skipped_to_dict,
    step_from_dict,
    step_to_dict,
    steps_from_json,
)


def names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def test_columns_cover_every_field() -> None:
    """A field added to Delivery, Attempt or Receipt without a column fails here."""
    # Delivery.route and .order ride in the unusable column (written once, as they are)
    assert set(DELIVERY_COLUMNS) | {"attempts", "route", "order"} == names(Delivery)
    assert set(ATTEMPT_COLUMNS) | {"receipts"} == names(Attempt)
    assert set(RECEIPT_COLUMNS) - {"echoed_attempt_id"} | {"attempt_id"} == names(Receipt)


def test_steps_and_skips_round_trip_whole() -> None:
    """Every field of a step and of a skipped step survives JSON and back."""
    step = Step(
        channel="sms",
        providers=("a", "b"),
        wait_for=WaitFor.READ,
        timeout=5.0,
        retry_attempts=4,
        retry_initial=0.5,
        retry_max=9.0,
        quiet_hours=(1320, 540),
        quiet_wait=True,
        categories=frozenset({"transactional"}),
        withdraw_superseded=True,
        options={"a": {"template": {"name": "parcel"}}},
        on_too_long="split",
        keep_place=True,
        max_segments=2,
        transliterate=True,
    )
    assert set(step_to_dict(step)) == names(Step)
    assert step_from_dict(step_to_dict(step)) == step
    skip = SkippedStep(step=1, channel="sms", reason="opted_out", ts=1.5, detail="why")
    assert set(skipped_to_dict(skip)) == names(SkippedStep)
    assert skipped_from_dict(skipped_to_dict(skip)) == skip


def test_stored_recipient_and_message_restore_equal_to_validated_ones() -> None:
    """The stores restore what they wrote without validating again; what comes back must
    equal the validated original, field for field (a new field not restored fails here)."""
    recipient = Recipient(
        id="r1",
        whatsapp="+79161234567",
        telegram="12345",
        viber="vb-1",
        sms="8 916 123-45-68",
        email="a@example.com",
        call="+79161234569",
        app="device-1",
        addresses={"max": "m-1"},
        locale="ru",
        timezone="Europe/Moscow",
        opted_out={"viber"},
        region="RU",
    )
    restored = Recipient.restore(json.loads(dumps(recipient.to_dict())))
    assert restored == recipient
    assert {f.name: getattr(restored, f.name) for f in fields(Recipient)} == {
        f.name: getattr(recipient, f.name) for f in fields(Recipient)
    }
    message = Message(
        text="hi",
        subject="s",
        category="marketing",
        overrides={"email": {"html": "<b>hi</b>"}},
        metadata={"order": 7},
    )
    assert Message.restore(json.loads(dumps(message.to_dict()))) == message
    assert Message.restore(json.loads(dumps(Message(text="x").to_dict()))) == Message(text="x")


def test_steps_json_of_one_policy_is_decoded_once() -> None:
    step = Step(channel="sms", providers=("a",))
    text = encode_steps((step,))
    assert steps_from_json(text) == (step,)
    assert steps_from_json(text) is steps_from_json(text)
    assert steps_from_json(json.loads(text)) == (step,)  # PostgreSQL hands jsonb decoded


def test_unchanging_parts_are_decoded_once_and_bounded() -> None:
    """Recipient and message are decoded once per delivery id, and the cache keeps only
    the newest `size` deliveries (memory does not grow with the deliveries pending)."""
    unchanging = Unchanging(size=2)
    recipient = Recipient(id="r", sms="+79161234567")
    message = Message(text="hi")
    r_json, m_json = dumps(recipient.to_dict()), dumps(message.to_dict())
    first = unchanging.decode("d1", r_json, m_json)
    assert first == (recipient, message)
    assert unchanging.decode("d1", "not json", "not json") is first  # not decoded again
    unchanging.decode("d2", r_json, m_json)
    unchanging.decode("d3", r_json, m_json)
    assert len(unchanging._parts) == 2 and "d1" not in unchanging._parts
