"""What each page shows, gathered from the notifier's store through the read-only
views (the same indexed queries as `cascade-notify deliveries` and `stats`), as plain
values for the templates. Nothing here writes, and nothing here renders HTML."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Final, Literal

from cascade_notify.errors import RecipientError
from cascade_notify.models import Delivery, DeliveryStatus, QueuedCall
from cascade_notify.models.channels import CHANNEL_KINDS, AddressKind, normalize_phone
from cascade_notify.observe import api as views
from cascade_notify.observe import compute, timeline
from cascade_notify.observe.types import DeliveryPage, DeliveryQuery, DeliverySummary
from cascade_notify.resilience.circuit import BreakerInfo
from cascade_notify.stores.base import CallQueue

if TYPE_CHECKING:
    from cascade_notify.notifier import Notifier
    from cascade_notify.observe.types import FailureRow, Stats

#: Every delivery status in plain words, as the page and docs/support-agents.md say it.
STATUS_WORDS: Final[dict[str, str]] = {
    "scheduled": "waiting for its send time",
    "pending": "still on its way: the cascade is trying channels",
    "delivered": "reached the customer",
    "exhausted": "every channel was tried and none reached the customer",
    "expired": "its time ran out before any channel reached the customer",
    "cancelled": "stopped on request before it reached the customer",
}
PAGE_SIZE: Final = 25
_PHONE_LIKE: Final = re.compile(r"^\+?[\d\s().\-]{7,}$")
_EMAIL_LIKE: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SearchKind = Literal["recent", "delivery", "idempotency_key", "phone", "email", "recipient"]


def mask(address: str, kind: AddressKind | None) -> str:
    """An address with most of it hidden: `+79•••••••67`, `a•••@example.com`, `12•••89`."""
    if kind is AddressKind.EMAIL or (kind is None and "@" in address):
        local, _, domain = address.partition("@")
        return f"{local[:1]}•••@{domain}"
    keep = 3 if address.startswith("+") else 2
    if len(address) <= keep + 2:
        return "•" * len(address)
    return address[:keep] + "•" * (len(address) - keep - 2) + address[-2:]


@dataclass(frozen=True, slots=True)
class Search:
    """What the search box found: how `q` was read, the page, and a note for the agent."""

    q: str
    kind: SearchKind
    value: str | None
    page: DeliveryPage
    note: str | None = None


async def calls_of(notifier: Notifier, delivery: Delivery) -> dict[str, QueuedCall]:
    """The queued calls of `delivery`'s call attempts, by task id (the attempt's provider
    message id), when the store is a call queue; each is one lookup by key."""
    store = notifier.store
    if not isinstance(store, CallQueue):
        return {}
    found: dict[str, QueuedCall] = {}
    for attempt in delivery.attempts:
        task = attempt.provider_message_id
        if attempt.channel == "call" and task is not None:
            queued = await store.call(task)
            if queued is not None:
                found[task] = queued
    return found


async def search(notifier: Notifier, q: str, cursor: str | None) -> Search:
    """Read `q` as a delivery id, an idempotency key, a phone number (in the policy's
    `default_region`), an e-mail or a recipient id, in that order; the first that finds
    anything answers. Each is one indexed lookup."""
    q = q.strip()
    if not q:
        page = await notifier.deliveries(cursor=cursor, limit=PAGE_SIZE)
        return Search(q, "recent", None, page)
    if cursor is None:
        found = await notifier.store.get(q)
        if found is not None:
            one = DeliveryPage(items=(compute.summary(found),), cursor=None)
            return Search(q, "delivery", q, one)
    tries: list[tuple[SearchKind, str, DeliveryQuery]] = [
        ("idempotency_key", q, DeliveryQuery(idempotency_key=q))
    ]
    note = None
    if _EMAIL_LIKE.match(q):
        tries.append(("email", q, DeliveryQuery(email=q)))
    elif _PHONE_LIKE.match(q) and sum(c.isdigit() for c in q) >= 7:
        region = notifier.config.default_region
        try:
            phone = normalize_phone(q, "q", region)
        except RecipientError as exc:
            note = f"not read as a phone number: {exc}"
        else:
            tries.append(("phone", phone, DeliveryQuery(phone=phone)))
    tries.append(("recipient", q, DeliveryQuery(recipient=q)))
    last: Search | None = None
    for kind, value, query in tries:
        page = await notifier.deliveries(query, cursor=cursor, limit=PAGE_SIZE)
        last = Search(q, kind, value, page, note)
        if page.items:
            return last
    assert last is not None
    return last


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a delivery's story, with its time in both zones."""

    kind: str
    mark: str
    at_recipient: str
    at_agent: str
    offset: str
    step: int | None
    channel: str | None
    provider: str | None
    status: str | None
    detail: str | None
    code: str | None
    cost: float | None


@dataclass(frozen=True, slots=True)
class Call:
    """A call task's outcome: the attempt's provider, what it came to, the note, and who
    called (when the store keeps the call queue: `type: call_queue`)."""

    provider: str
    status: str
    outcome: str | None
    note: str | None
    at: str
    operator: str | None = None


@dataclass(frozen=True, slots=True)
class Story:
    delivery: Delivery
    status_words: str
    recipient_zone: str
    agent_zone: str
    created_recipient: str
    created_agent: str
    addresses: tuple[tuple[str, str], ...]
    text: str | None  # None: hidden by policy
    subject: str | None
    rows: tuple[Row, ...]
    cost: float | None
    calls: tuple[Call, ...]


_MARKS: Final = {
    "created": "●",
    "finished": "●",
    "skipped": "↷",
    "delivered": "✓",
    "read": "✓✓",
    "accepted": "→",
    "sent": "·",
    "failed": "✗",
    "unreachable": "✗",
    "transient": "↻",
    "timed_out": "⌛",
}


def when(ts: float, zone: tzinfo) -> str:
    return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def _offset(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"+{seconds}s"
    if seconds < 7200:
        return f"+{seconds // 60}m{seconds % 60:02d}s"
    return f"+{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def story(
    delivery: Delivery,
    agent_zone: tzinfo,
    *,
    reveal: bool,
    show_text: bool,
    queued: Mapping[str, QueuedCall] | None = None,
) -> Story:
    """The delivery's timeline for the page: addresses masked unless `reveal`, the text
    only if `show_text` (the policy's `support:` settings for its category); `queued`:
    its calls in the call queue, by task id (see `calls_of`)."""
    queued = queued or {}
    told = timeline(delivery)
    recipient = delivery.recipient
    addresses: list[tuple[str, str]] = []
    hide: dict[str, str] = {}
    for name, value in recipient.to_dict().items():
        if name in ("id", "locale", "timezone", "region", "opted_out", "addresses"):
            continue
        shown = value if reveal else mask(value, CHANNEL_KINDS.get(name))
        hide[value] = shown
        addresses.append((name, shown))
    for name, value in recipient.addresses.items():
        shown = value if reveal else mask(value, None)
        hide[value] = shown
        addresses.append((name, shown))

    def private(text: str | None) -> str | None:
        # a provider's error may quote the number it refused
        if text is None or reveal:
            return text
        for value, shown in hide.items():
            text = text.replace(value, shown)
        return text

    rows = tuple(
        Row(
            kind=e.kind,
            mark=_MARKS.get(e.status or e.kind, _MARKS.get(e.kind, "·")),
            at_recipient=when(e.ts, told.zone),
            at_agent=when(e.ts, agent_zone),
            offset=_offset(e.offset),
            step=e.step,
            channel=e.channel,
            provider=e.provider,
            status=e.status,
            detail=private(e.detail) if e.kind != "created" else f"policy {e.detail}",
            code=e.code,
            cost=e.cost,
        )
        for e in told.entries
    )
    calls = []
    for a in delivery.attempts:
        if a.channel != "call":
            continue
        known = queued.get(a.provider_message_id or "")
        note = next((r.error for r in reversed(a.receipts) if r.error), None)
        calls.append(
            Call(
                provider=a.provider,
                status=a.status.value,
                outcome=next((r.code for r in reversed(a.receipts) if r.code), None)
                or (known.status.value if known is not None else None),
                note=private(known.note if known is not None and known.note else note),
                at=when(a.finished_ts or a.started_ts, agent_zone),
                operator=None if known is None else known.operator,
            )
        )
    message = delivery.message
    return Story(
        delivery=delivery,
        status_words=STATUS_WORDS.get(delivery.status.value, delivery.status.value),
        recipient_zone=told.zone_name,
        agent_zone=str(agent_zone),
        created_recipient=when(delivery.created_ts, told.zone),
        created_agent=when(delivery.created_ts, agent_zone),
        addresses=tuple(addresses),
        text=message.text if show_text else None,
        subject=message.subject if show_text else None,
        rows=rows,
        cost=compute.cost(delivery),
        calls=tuple(calls),
    )


@dataclass(frozen=True, slots=True)
class Operator:
    """The operator's view of a window: figures by channel and by provider, failures by
    kind, and every breaker (open ones first)."""

    since: float
    until: float
    by_channel: Stats
    by_provider: Stats
    failures: Sequence[FailureRow]
    breakers: Sequence[BreakerInfo]


def _open_first(info: BreakerInfo) -> tuple[int, str]:
    return ({"open": 0, "half_open": 1}.get(info.state, 2), info.provider)


async def operator(notifier: Notifier, since: float, until: float) -> Operator:
    """The figures of `[since, until)` and the breakers now. The three aggregate reads run
    at once (SQLite reads each on a connection of its own, PostgreSQL on the pool's)."""
    by_channel, by_provider, failures, breakers = await asyncio.gather(
        notifier.stats(since=since, until=until, by="channel"),
        notifier.stats(since=since, until=until, by="provider"),
        views.failures(notifier.store, since=since, until=until),
        notifier.breakers.list(),
    )
    return Operator(
        since, until, by_channel, by_provider, failures, sorted(breakers, key=_open_first)
    )


async def fresh_breakers(notifier: Notifier, seen: Operator) -> Operator:
    """`seen` (kept a while) with the breakers read now: a change shows at once."""
    breakers = sorted(await notifier.breakers.list(), key=_open_first)
    return Operator(
        seen.since, seen.until, seen.by_channel, seen.by_provider, seen.failures, breakers
    )


def status_class(status: DeliveryStatus | str) -> str:
    value = status.value if isinstance(status, DeliveryStatus) else status
    if value in ("delivered", "read", "closed"):
        return "good"
    if value in ("exhausted", "expired", "failed", "unreachable", "open"):
        return "bad"
    return "wait"


def summary_time(item: DeliverySummary, zone: tzinfo) -> str:
    return when(item.created_ts, zone)


__all__ = ["STATUS_WORDS", "Operator", "Search", "Story", "mask", "operator", "search", "story"]
