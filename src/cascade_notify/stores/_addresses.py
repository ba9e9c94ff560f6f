"""The address book's rules (`AddressBook`), one definition for every store: which
signals a store takes, and what recording one does to the entry of its address.

A store keeps one entry per (channel, address): `gone` (unusable, with its reason) or
`linked` (the address of `recipient_id` on that channel). A signal replaces its address's
entry only if it outranks it: a later `ts`, or at the same `ts` a `gone` over a `linked`
(when in doubt, do not write to someone who may have blocked the bot), then its text.
So a repeat, or a signal older than what is stored, changes nothing, in any order. A
`linked` one also ends its recipient's older links on the channel, and loses to a newer
one (a link to another address made later stands).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cascade_notify.errors import StoreError
from cascade_notify.models import Signal, SignalKind
from cascade_notify.stores.base import SendReads

#: The longest address, provider name and recipient id a store takes (an email address is
#: at most 254 characters, a bot's user id a few dozen).
MAX_NAME: Final = 256
#: A reason longer than this is cut: it is for people to read.
MAX_REASON: Final = 200
#: How long a store keeps the digest of a link token that linked: past any token's life
#: (`links.ttl` is at most 366 days), so a replay is refused until the token expires.
SPENT_TTL: Final = 400 * 86400.0
_CHANNEL: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# control characters (PostgreSQL text cannot hold NUL) and lone surrogates (not UTF-8)
_BAD: Final = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_KINDS: Final = frozenset(SignalKind)


@dataclass(frozen=True, slots=True)
class Entry:
    """What a store keeps for one (channel, address)."""

    state: SignalKind
    reason: str
    provider: str
    ts: float
    recipient_id: str | None

    def signal(self, channel: str, address: str) -> Signal:
        return Signal(
            kind=self.state,
            channel=channel,
            address=address,
            provider=self.provider,
            reason=self.reason,
            ts=self.ts,
            recipient_id=self.recipient_id,
        )


def storable(value: object) -> bool:
    """Whether `value` can be an address, provider name or recipient id in a store."""
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME and not _BAD.search(value)


def checked(signals: Iterable[Signal]) -> list[Signal]:
    """`signals` as a store keeps them (reasons cut to `MAX_REASON`, cleaned of control
    characters); a signal no store can keep is a StoreError naming it, before anything
    is written."""
    kept: list[Signal] = []
    for index, signal in enumerate(signals):
        problem = _problem(signal)
        if problem is not None:
            raise StoreError(f"cannot record signal {index}: {problem}")
        reason = _BAD.sub(" ", signal.reason)[:MAX_REASON]
        kept.append(
            dataclasses.replace(
                signal, kind=SignalKind(signal.kind), reason=reason, ts=float(signal.ts)
            )
        )
    return kept


def _problem(signal: Signal) -> str | None:
    if not isinstance(signal, Signal):
        return f"{type(signal).__name__} is not a Signal"
    kind = signal.kind
    if kind not in _KINDS:
        return f"kind {kind!r} is not one of {', '.join(SignalKind)}"
    if not isinstance(signal.channel, str) or not _CHANNEL.match(signal.channel):
        return f"{signal.channel!r} is not a channel name"
    for name in ("address", "provider"):
        if not storable(getattr(signal, name)):
            return f"{name} must be 1 to {MAX_NAME} characters without control characters"
    if signal.recipient_id is None:
        if signal.kind is SignalKind.LINKED:
            return "a linked signal needs a recipient_id"
    elif not storable(signal.recipient_id):
        return f"recipient_id must be 1 to {MAX_NAME} characters without control characters"
    if signal.token is not None:
        if signal.kind is not SignalKind.LINKED:
            return "only a linked signal carries a token"
        if not storable(signal.token):
            return f"token must be 1 to {MAX_NAME} characters without control characters"
    if not isinstance(signal.reason, str):
        return "reason must be a string"
    if (
        not isinstance(signal.ts, int | float)
        or isinstance(signal.ts, bool)
        or not math.isfinite(signal.ts)
    ):
        return f"ts must be a finite number of seconds, got {signal.ts!r}"
    return None


def spent_key(token: str) -> str:
    """What a store keeps of a link token that linked: a digest (the token itself holds
    the recipient id, which `forget` must erase everywhere)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def wanted(addresses: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (channel, address) pairs of an `unusable` question that a store could hold,
    once each (anything else cannot have been recorded, so is not unusable)."""
    return list(
        dict.fromkeys(
            (channel, address)
            for channel, address in addresses
            if isinstance(channel, str) and _CHANNEL.match(channel) and storable(address)
        )
    )


def _rank(state: SignalKind, ts: float, reason: str, provider: str) -> tuple[float, bool, str, str]:
    return ts, state is SignalKind.GONE, reason, provider


def outcome(
    signal: Signal, stored: Entry | None, links: Sequence[tuple[str, float]]
) -> tuple[Entry, list[str]] | None:
    """What recording `signal` (from `checked`) does: the entry its address gets, and the
    addresses of the recipient's older links on the channel that go; None: nothing.

    `stored` is its address's entry; `links`, for a `linked` signal, its recipient's other
    linked addresses on the channel with their `ts`."""
    if stored is not None and _rank(signal.kind, signal.ts, signal.reason, signal.provider) <= (
        _rank(stored.state, stored.ts, stored.reason, stored.provider)
    ):
        return None
    ended: list[str] = []
    if signal.kind is SignalKind.LINKED:
        # a later link to another address (at the same ts: the greater address) stands
        if any((ts, address) > (signal.ts, signal.address) for address, ts in links):
            return None
        ended = [address for address, _ in links]
        recipient_id = signal.recipient_id
    else:  # whose it was, if the signal does not say: kept, so `forget` finds it
        recipient_id = signal.recipient_id or (None if stored is None else stored.recipient_id)
    entry = Entry(signal.kind, signal.reason, signal.provider, signal.ts, recipient_id)
    return entry, ended


def asked(reads: SendReads) -> SendReads:
    """`reads` cut to what a store could hold (an id no store keeps knows nothing)."""
    keeps = storable(reads.recipient_id)
    return SendReads(
        reads.recipient_id,
        known=reads.known and keeps,
        addresses=tuple(wanted(reads.addresses)),
        history=reads.history and keeps,
    )
