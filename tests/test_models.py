"""Recipients and messages are validated on construction, with the field named."""

from __future__ import annotations

import pytest

from cascade_notify import Message, MessageError, Recipient, RecipientError


def test_phone_numbers_are_normalised_to_e164():
    """Spaces, dashes and brackets go; the number comes out in E.164."""
    recipient = Recipient(id="r", sms="+7 (916) 123-45-67", whatsapp="+44 7911 123456")
    assert recipient.sms == "+79161234567"
    assert recipient.whatsapp == "+447911123456"


def test_national_number_needs_a_region():
    """A number without a country code is read in `region`, and refused without one."""
    assert Recipient(id="r", call="8 916 123-45-67", region="RU").call == "+79161234567"
    with pytest.raises(RecipientError, match=r"Recipient\.call: .*international form"):
        Recipient(id="r", call="8 916 123-45-67")


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
