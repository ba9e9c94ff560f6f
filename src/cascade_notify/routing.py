"""Routing: which of the policy file's policies a send gets, by its recipient and message.

`routes:` is an ordered list of `{when: {...}, policy: NAME}`; the first route whose
`when` holds wins, the file's `default_policy` otherwise, and `send(..., policy=)`
overrides both. A `when` key takes one value or a list (any of them matches); every
key given must match; an empty `when` matches every send. The rules are compiled when
the file is loaded (values normalised into frozensets), so choosing is a few set
lookups per route, and only the facts some route asks about are worked out.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import phonenumbers
from phonenumbers import geocoder

from cascade_notify.models import CHANNELS, DEFAULT_ROUTE, Message, Recipient, Route
from cascade_notify.models.channels import read_phone
from cascade_notify.models.records import ROUTE_KEYS

#: The keys a route's `when` may hold, in the order they are shown.
KEYS: Final = ROUTE_KEYS
_COUNTRY, _REGION, _LOCALE, _TAGS, _CATEGORY, _CHANNELS = range(6)
#: Facts that are sets (the route matches when they share a value with its list).
_SETS: Final = frozenset({_LOCALE, _TAGS, _CHANNELS})
#: Where a recipient's country and region are read from: its first phone number.
_PHONES: Final = ("whatsapp", "sms", "call")


def normalise(key: str, value: str) -> str:
    """A `when` value, or a fact, in the form they are compared in."""
    if key == "country":
        return value.strip().upper()
    if key == "region":
        return value.strip().casefold()
    if key == "locale":
        return value.strip().replace("_", "-").casefold()
    return value


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled route: the policy it names, its record for the delivery, and its
    tests (fact, the values that match it)."""

    policy: str
    route: Route
    tests: tuple[tuple[int, frozenset[str]], ...]

    @classmethod
    def compile(cls, index: int, when: Mapping[str, Sequence[str]], policy: str) -> Rule:
        """`routes[index]`, from its `when` (key -> values, as the file gives them)."""
        shown = tuple((key, tuple(when[key])) for key in KEYS if key in when)
        tests = tuple(
            (KEYS.index(key), frozenset(normalise(key, v) for v in values)) for key, values in shown
        )
        return cls(policy, Route(source="route", index=index, when=shown), tests)

    def covers(self, other: Rule) -> bool:
        """Whether every send `other` matches is matched by this rule too (so an `other`
        after this one is never reached)."""
        theirs = dict(other.tests)
        for fact, allowed in self.tests:
            wanted = theirs.get(fact)
            if wanted is None:
                return False
            if fact == _LOCALE:  # a language alone ("ru") matches its locales ("ru-ru")
                if any(v not in allowed and v.split("-")[0] not in allowed for v in wanted):
                    return False
            elif not wanted <= allowed:
                return False
        return True


class Router:
    """Chooses a send's policy by the compiled rules: `choose(recipient, message)`."""

    __slots__ = ("_country", "_region", "default", "rules", "uses")

    def __init__(self, rules: Sequence[Rule], default: str) -> None:
        self.rules = tuple(rules)
        self.default = default
        self.uses = frozenset(fact for rule in self.rules for fact, _ in rule.tests)
        self._country = _COUNTRY in self.uses
        self._region = _REGION in self.uses

    def choose(self, recipient: Recipient, message: Message) -> tuple[str, Route]:
        """The policy for this send, and the route that chose it."""
        if not self.rules:
            return self.default, DEFAULT_ROUTE
        facts = self._facts(recipient, message)
        for rule in self.rules:
            for fact, allowed in rule.tests:
                value = facts[fact]
                if fact in _SETS:
                    if allowed.isdisjoint(value):  # type: ignore[arg-type]
                        break
                elif value not in allowed:
                    break
            else:
                return rule.policy, rule.route
        return self.default, DEFAULT_ROUTE

    def _facts(
        self, recipient: Recipient, message: Message
    ) -> tuple[str | frozenset[str] | None, ...]:
        uses = self.uses
        phone = country = region = None
        if self._country or self._region:
            phone = next((n for c in _PHONES if (n := getattr(recipient, c)) is not None), None)
            read = None if phone is None else read_phone(phone)
            country = None if read is None else read[1]
        if self._region:
            region = _own_region(recipient.region)
            if region is None and phone is not None and country is not None:
                region = area_of(phone)
        return (
            country,
            region,
            _locale(recipient.locale) if _LOCALE in uses else frozenset(),
            recipient.tags,
            message.category,
            usable_channels(recipient) if _CHANNELS in uses else frozenset(),
        )


def _own_region(given: str | None) -> str | None:
    """The recipient's `region` as a region to route by: an ISO country code there only
    says where its national numbers are read, so it names no region."""
    if not given or given.upper() in phonenumbers.SUPPORTED_REGIONS:
        return None
    return normalise("region", given)


@functools.lru_cache(maxsize=4096)
def _locale(given: str | None) -> frozenset[str]:
    if not given:
        return frozenset()
    full = normalise("locale", given)
    return frozenset({full, full.split("-")[0]})


@functools.lru_cache(maxsize=65_536)
def area_of(e164: str) -> str | None:
    """The area (city, province) the offline `phonenumbers` geocoder gives the number's
    range, in English and normalised, e.g. "moscow"; None where it knows only the country
    (Russian mobile numbers, since numbers move between operators) or nothing."""
    read = read_phone(e164)
    if read is None or read[1] is None:
        return None
    number, country = read
    found = geocoder.description_for_valid_number(number, "en", region=country)
    if not found or found == geocoder.country_name_for_number(number, "en"):
        return None  # it knows the country only
    return normalise("region", found)


def usable_channels(recipient: Recipient) -> frozenset[str]:
    """The channels the recipient has an address on and has not opted out of."""
    named = [c for c in CHANNELS if getattr(recipient, c) is not None]
    return frozenset(named).union(recipient.addresses).difference(recipient.opted_out)
