"""`Recipient`: who to reach, one address per channel."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cascade_notify.errors import RecipientError
from cascade_notify.models._checks import (
    _SHORT_LIMIT,
    ADDRESS_LIMIT,
    ID_KEY_LIMIT,
    _check_text,
    strict_init,
)
from cascade_notify.models.channels import (
    _CHANNEL_NAME,
    _EMAIL,
    _MOVED,
    _NAMED_CHANNELS,
    CHANNEL_KINDS,
    NATIONAL_HINT,
    AddressKind,
    normalize_phone,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipient:
    """Who to reach, with one address per channel.

    Phone numbers (`whatsapp`, `sms`, `call`) are validated and normalised to
    E.164; a number without its country code is read in `region` (e.g. "RU"). Without
    a `region` such a number is kept as given until `send()`, which reads it in the
    policy file's `default_region` (or refuses it, saying how to write it).
    `addresses` holds any other channel (`max`, `vk`, a plugin's) by name.
    `tags` are the caller's own labels (`vip`, `b2b`), which `routes:` in the policy
    file can choose a policy by.
    """

    id: str
    whatsapp: str | None = None
    telegram: str | None = None
    viber: str | None = None
    max: str | None = None
    vk: str | None = None
    sms: str | None = None
    email: str | None = None
    call: str | None = None
    app: str | None = None
    addresses: Mapping[str, str] = field(default_factory=dict)
    locale: str | None = None
    timezone: str | None = None
    opted_out: frozenset[str] = frozenset()
    region: str | None = None
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise RecipientError("id", "must be a non-empty string")
        _check_text(self.id, "id", ID_KEY_LIMIT, RecipientError)
        for name in ("locale", "region"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str):
                    raise RecipientError(name, f"must be a string, got {type(value).__name__}")
                _check_text(value, name, _SHORT_LIMIT, RecipientError)
        if isinstance(self.addresses, Mapping):
            # max and vk were given in `addresses` before they became named channels
            moved = {c: a for c, a in self.addresses.items() if c in _MOVED}
            for channel, address in moved.items():
                if getattr(self, channel) is None:
                    object.__setattr__(self, channel, address)
            if moved:
                rest = {c: a for c, a in self.addresses.items() if c not in _MOVED}
                object.__setattr__(self, "addresses", rest)
        for name, kind in CHANNEL_KINDS.items():
            value = getattr(self, name)
            if value is None or kind is AddressKind.EMAIL:
                continue
            if kind is AddressKind.PHONE:
                phone = normalize_phone(value, name, self.region, national_ok=True)
                _check_text(phone, name, ADDRESS_LIMIT, RecipientError)
                object.__setattr__(self, name, phone)
            else:
                if isinstance(value, int) and not isinstance(value, bool):
                    value = str(value)
                    object.__setattr__(self, name, value)
                if not isinstance(value, str) or not value.strip():
                    raise RecipientError(name, f"must be a non-empty string, got {value!r}")
                _check_text(value, name, ADDRESS_LIMIT, RecipientError)
        if self.email is not None and not (
            isinstance(self.email, str) and _EMAIL.match(self.email)
        ):
            raise RecipientError("email", f"{self.email!r} is not an email address")
        if self.email is not None:
            _check_text(self.email, "email", ADDRESS_LIMIT, RecipientError)
        extra: dict[str, str] = {}
        for channel, address in dict(self.addresses).items():
            if not isinstance(channel, str) or not _CHANNEL_NAME.match(channel):
                raise RecipientError("addresses", f"{channel!r} is not a channel name")
            if channel in _NAMED_CHANNELS:
                raise RecipientError(
                    f"addresses[{channel!r}]", f"use the {channel}= argument for this channel"
                )
            if not isinstance(address, str) or not address:
                raise RecipientError(f"addresses[{channel!r}]", "must be a non-empty string")
            _check_text(address, f"addresses[{channel!r}]", ADDRESS_LIMIT, RecipientError)
            extra[channel] = address
        object.__setattr__(self, "addresses", extra)
        if isinstance(self.opted_out, str):
            raise RecipientError("opted_out", "must be a collection of channel names, not a str")
        try:
            opted_out = frozenset(self.opted_out)
        except TypeError:
            raise RecipientError("opted_out", "must be a collection of channel names") from None
        for channel in opted_out:
            if not isinstance(channel, str):
                raise RecipientError("opted_out", f"{channel!r} is not a channel name")
            _check_text(channel, "opted_out", _SHORT_LIMIT, RecipientError)
        object.__setattr__(self, "opted_out", opted_out)
        object.__setattr__(self, "tags", _tags(self.tags))
        if self.timezone is not None:
            if not isinstance(self.timezone, str):
                raise RecipientError("timezone", "must be an IANA time zone name")
            _check_text(self.timezone, "timezone", _SHORT_LIMIT, RecipientError)
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                raise RecipientError(
                    "timezone", f"{self.timezone!r} is not an IANA time zone"
                ) from None

    def localised(self, region: str | None) -> Recipient:
        """This recipient with its national phone numbers (those written without a
        country code, kept as given for want of a `region`) read in `region`; a
        RecipientError naming the field, saying how to write it, when `region` is None."""
        pending = [
            name
            for name, kind in CHANNEL_KINDS.items()
            if kind is AddressKind.PHONE
            and (value := getattr(self, name)) is not None
            and not value.startswith("+")
        ]
        if not pending:
            return self
        if region is None:
            name = pending[0]
            raise RecipientError(
                name, f"{getattr(self, name)!r} has no country code: {NATIONAL_HINT}"
            )
        return dataclasses.replace(self, region=region)

    def address(self, channel: str) -> str | None:
        """The address on `channel`, or None."""
        if channel in _NAMED_CHANNELS:
            value: str | None = getattr(self, channel)
            return value
        return self.addresses.get(channel)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id}
        for name in (*_NAMED_CHANNELS, "locale", "timezone", "region"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.addresses:
            data["addresses"] = dict(self.addresses)
        if self.opted_out:
            data["opted_out"] = sorted(self.opted_out)
        if self.tags:
            data["tags"] = sorted(self.tags)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipient:
        values = dict(data)
        values["opted_out"] = frozenset(values.get("opted_out", ()))
        if isinstance(values.get("tags"), list | tuple):  # JSON's lists; a str is refused
            values["tags"] = frozenset(values["tags"])
        return cls(**values)

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> Recipient:
        """A recipient from `to_dict()` output that this library validated before it was
        stored: not validated again (phone number parsing is most of a store's read cost).
        Use `from_dict` for data from anywhere else."""
        recipient = object.__new__(cls)
        for name in _RECIPIENT_FIELDS:
            object.__setattr__(recipient, name, data.get(name))
        extra = dict(data.get("addresses", ()))
        for name in _MOVED:  # stored before these two became named channels
            if name in extra and data.get(name) is None:
                object.__setattr__(recipient, name, extra.pop(name))
        object.__setattr__(recipient, "addresses", extra)
        object.__setattr__(recipient, "opted_out", frozenset(data.get("opted_out", ())))
        object.__setattr__(recipient, "tags", frozenset(data.get("tags", ())))
        return recipient


def _tags(given: object) -> frozenset[str]:
    if isinstance(given, str):
        raise RecipientError("tags", f"must be a collection of tags, not a str ({given!r})")
    try:
        tags: frozenset[str] = frozenset(given)  # type: ignore[call-overload]
    except TypeError:
        raise RecipientError("tags", "must be a collection of tags (strings)") from None
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise RecipientError("tags", f"{tag!r} is not a tag (a non-empty string)")
        _check_text(tag, "tags", _SHORT_LIMIT, RecipientError)
    return tags


_RECIPIENT_FIELDS = (*_NAMED_CHANNELS, "id", "locale", "timezone", "region")
strict_init(Recipient, RecipientError)
