"""The channels the library knows by name, the kind of address each takes, and phone
numbers normalised to E.164."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

import phonenumbers

from cascade_notify.errors import RecipientError


class AddressKind(StrEnum):
    """How a channel names its addresses."""

    PHONE = "phone"  # E.164, validated and normalised with `phonenumbers`
    EMAIL = "email"
    ID = "id"  # an opaque id the provider gave (a chat id, a user id, the app's own id)


#: The channels the library knows by name, and the kind of address each takes: the one
#: table `Recipient`, the policy and the providers read. The set is open: any other
#: name works through `Recipient(addresses=...)` and a provider declaring it.
CHANNEL_KINDS: Final[Mapping[str, AddressKind]] = MappingProxyType(
    {
        "whatsapp": AddressKind.PHONE,
        "telegram": AddressKind.ID,
        "viber": AddressKind.ID,
        "max": AddressKind.ID,
        "vk": AddressKind.ID,
        "sms": AddressKind.PHONE,
        "email": AddressKind.EMAIL,
        "call": AddressKind.PHONE,
        "app": AddressKind.ID,
    }
)
CHANNELS: Final = tuple(CHANNEL_KINDS)
PHONE_CHANNELS: Final = frozenset(c for c, k in CHANNEL_KINDS.items() if k is AddressKind.PHONE)
_NAMED_CHANNELS: Final = CHANNELS
_MOVED: Final = ("max", "vk")
_CHANNEL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_phone(
    value: object, field_name: str, region: str | None = None, *, national_ok: bool = False
) -> str:
    """Return `value` as an E.164 number, or raise RecipientError naming the field.

    With `national_ok` and no `region`, a number written without its country code is
    returned as given (stripped): it is read later, in the policy's `default_region`."""
    if not isinstance(value, str) or not value.strip():
        raise RecipientError(field_name, f"must be a phone number string, got {value!r}")
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        national = region is None and exc.error_type == exc.INVALID_COUNTRY_CODE
        if national and national_ok:
            return value.strip()
        hint = f" ({NATIONAL_HINT})" if national else ""
        raise RecipientError(
            field_name, f"{value!r} is not a phone number: {exc._msg}{hint}"
        ) from None
    # is_valid_number() is these two calls (with None for a number no country owns); the
    # country it finds is kept for routing
    country: str | None = phonenumbers.region_code_for_number(number)
    if not phonenumbers.is_valid_number_for_region(number, country):  # type: ignore[arg-type]
        raise RecipientError(field_name, f"{value!r} is not a valid phone number")
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    _remember(e164, number, country)
    return e164


#: Numbers read lately, E.164 -> (parsed, ISO country or None): what routing asks of a
#: recipient's number is known from the parse its Recipient made, not parsed again.
_READ: dict[str, tuple[phonenumbers.PhoneNumber, str | None]] = {}
_READ_LIMIT: Final = 8192


def _remember(
    e164: str, number: phonenumbers.PhoneNumber, country: str | None
) -> tuple[phonenumbers.PhoneNumber, str | None]:
    if len(_READ) >= _READ_LIMIT:
        with contextlib.suppress(KeyError, RuntimeError, StopIteration):  # another thread's
            del _READ[next(iter(_READ))]
    found = _READ[e164] = (number, None if country == "001" else country)
    return found


def read_phone(e164: str) -> tuple[phonenumbers.PhoneNumber, str | None] | None:
    """An E.164 number parsed, with its ISO country (None for a non-geographic one);
    from the parse of the `Recipient` that holds it when that was lately, else parsed
    now. None if it is not a number."""
    found = _READ.get(e164)
    if found is not None:
        return found
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return _remember(e164, number, phonenumbers.region_code_for_number(number))


#: How to give a number that has no country code.
NATIONAL_HINT: Final = (
    "write it in international form, E.164: +<country code><number>, e.g. +79161234567; "
    "or set default_region: (an ISO country code, e.g. RU) in the policy file, or "
    "Recipient(region=...)"
)
