"""Recipients and messages are validated on construction, with the field named."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cascade_notify import Message, MessageError, Recipient, RecipientError


def test_phone_numbers_are_normalised_to_e164():
    """Spaces, dashes and brackets go; the number comes out in E.164."""
    recipient = Recipient(id="r", sms="+7 (916) 123-45-67", whatsapp="+44 7911 123456")
    assert recipient.sms == "+79161234567"
    assert recipient.whatsapp == "+447911123456"


def test_national_number_needs_a_region():
    """A number without a country code is read in `region`; without one it is kept as
    given until send() reads it in the policy's default_region, or refuses it."""
    assert Recipient(id="r", call="8 916 123-45-67", region="RU").call == "+79161234567"
    kept = Recipient(id="r", call="8 916 123-45-67")
    assert kept.call == "8 916 123-45-67"
    assert kept.localised("RU").call == "+79161234567"
    with pytest.raises(RecipientError, match=r"Recipient\.call: .*E\.164.*default_region"):
        kept.localised(None)


def test_text_that_is_no_number_is_refused_at_once():
    """Only a number lacking its country code waits for a region: letters never do."""
    with pytest.raises(RecipientError, match=r"Recipient\.sms: 'call me' is not a phone number"):
        Recipient(id="r", sms="call me")


@pytest.mark.parametrize("field", ["whatsapp", "sms", "call"])
def test_invalid_phone_names_the_field(field):
    """An invalid number is a RecipientError that names the field and the value."""
    with pytest.raises(RecipientError, match=rf"Recipient\.{field}: '\+7 123' is not a valid"):
        Recipient(id="r", **{field: "+7 123"})


def test_recipient_error_is_a_value_error():
    """RecipientError is also a ValueError, so generic input handling catches it."""
    with pytest.raises(ValueError, match="email"):
        Recipient(id="r", email="not-an-address")


def test_open_channel_set_through_addresses():
    """Channels beyond the named ones (max, vk, a plugin's) go through `addresses`."""
    recipient = Recipient(id="r", addresses={"max": "mid.123", "vk": "42"})
    assert recipient.address("max") == "mid.123"
    assert recipient.address("whatsapp") is None
    with pytest.raises(RecipientError, match="use the sms= argument"):
        Recipient(id="r", addresses={"sms": "+79161234567"})
    with pytest.raises(RecipientError, match="not a channel name"):
        Recipient(id="r", addresses={"Bad Name": "x"})


def test_timezone_and_opt_outs():
    """The time zone must be an IANA name; opted_out takes channel names."""
    with pytest.raises(RecipientError, match="timezone: 'Mars/Olympus'"):
        Recipient(id="r", timezone="Mars/Olympus")
    with pytest.raises(RecipientError, match="opted_out"):
        Recipient(id="r", opted_out="sms")  # type: ignore[arg-type]
    assert Recipient(id="r", opted_out=["sms"]).opted_out == frozenset({"sms"})


def test_telegram_chat_id_may_be_an_int():
    """A numeric Telegram chat id is kept as its string."""
    assert Recipient(id="r", telegram=100200300).telegram == "100200300"  # type: ignore[arg-type]


def test_recipient_round_trips_through_dict():
    """to_dict/from_dict keep every field (the stores rely on it)."""
    recipient = Recipient(
        id="r",
        sms="+79161234567",
        addresses={"vk": "1"},
        opted_out={"sms"},
        timezone="Europe/Moscow",
        locale="ru",
    )
    assert Recipient.from_dict(recipient.to_dict()) == recipient


def test_message_needs_text():
    """An empty message is refused; a channel override may carry the text instead."""
    with pytest.raises(MessageError, match=r"Message\.text: is empty"):
        Message(text="  ")
    message = Message(text="", overrides={"whatsapp": {"template": "parcel_arrived"}})
    assert message.text_for("sms") == ""
    assert Message(text="a", overrides={"sms": {"text": "b"}}).text_for("sms") == "b"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"text": "a\x00b"}, "text"),
        ({"text": "a\udc80"}, "text"),
        ({"text": "t", "subject": "\ud800"}, "subject"),
        ({"text": "t", "category": "x\x00"}, "category"),
        ({"text": "t", "metadata": {"k": "v\x00"}}, "metadata"),
        ({"text": "t", "metadata": {"k": float("nan")}}, "metadata"),
        ({"text": "t", "metadata": {"k": float("inf")}}, "metadata"),
        ({"text": "t", "metadata": {"k": {1, 2}}}, "metadata"),
        ({"text": "t", "metadata": {"at": datetime.now(UTC)}}, "metadata"),
        ({"text": "t", "metadata": {1: "one"}}, "metadata"),
        ({"text": "t", "overrides": {"email": {"html": "\x00"}}}, "overrides"),
    ],
)
def test_message_refuses_what_no_store_can_hold(fields: dict[str, Any], field: str) -> None:
    """NUL, lone surrogates and metadata that is not plain JSON are refused when the
    message is built, naming the field, the same whatever store it would go to."""
    with pytest.raises(MessageError, match=rf"^Message\.{field}") as caught:
        Message(**fields)
    assert caught.value.field == field


def test_message_keeps_metadata_as_every_store_gives_it_back() -> None:
    """Tuples become lists and an integral float past 2**53 its exact int, as JSON (and
    PostgreSQL's jsonb) would hand them back."""
    message = Message(text="t", metadata={"p": ("a", 1), "big": 1e23, "x": 0.5})
    assert message.metadata == {"p": ["a", 1], "big": int(1e23), "x": 0.5}
    assert type(message.metadata["big"]) is int


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"id": "r" * 257}, "id"),
        ({"id": "r\x00"}, "id"),
        ({"id": "r", "telegram": "1\udc80"}, "telegram"),
        ({"id": "r", "email": "a\x00@example.com"}, "email"),
        ({"id": "r", "addresses": {"line": "\x00"}}, "addresses['line']"),
        ({"id": "r", "max": "\x00"}, "max"),
        ({"id": "r", "locale": 5}, "locale"),
        ({"id": "r", "timezone": "x" * 5000}, "timezone"),
        ({"id": "r", "opted_out": {"sms", 1}}, "opted_out"),
    ],
)
def test_recipient_refuses_what_no_store_can_hold(fields: dict[str, Any], field: str) -> None:
    """The same for recipients: a RecipientError naming the field, never a raw OSError or
    a TypeError from a store later."""
    with pytest.raises(RecipientError) as caught:
        Recipient(**fields)
    assert caught.value.field == field
