"""Lists and statistics over `Delivery` objects in Python: the memory store's way, and
the definition the SQL stores' queries are tested against. `Rows` assembles the
figures of each group from partial results, for every store."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cascade_notify.models import Attempt, Delivery, DeliveryStatus
from cascade_notify.observe.types import (
    DAY,
    FAILED,
    MAX_FAILURE_ROWS,
    PERCENTILES,
    REACHED,
    WINNING,
    DeliveryPage,
    DeliveryQuery,
    DeliverySummary,
    Dimension,
    FailureRow,
    Key,
    QueryError,
    Stats,
    StatsRow,
    check_by,
    check_window,
    day_key,
    decode_cursor,
    encode_cursor,
    percentile,
)

#: The most deliveries one page holds.
MAX_PAGE = 1000


def check_limit(limit: int) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise QueryError("limit", f"must be a whole number from 1 to {MAX_PAGE}, got {limit!r}")


def matches(delivery: Delivery, query: DeliveryQuery) -> bool:
    return (
        (query.recipient is None or delivery.recipient.id == query.recipient)
        and (query.status is None or delivery.status is query.status)
        and (query.policy is None or delivery.policy == query.policy)
        and (query.since is None or delivery.created_ts >= query.since)
        and (query.until is None or delivery.created_ts < query.until)
        and (query.channel is None or any(a.channel == query.channel for a in delivery.attempts))
        and (query.phone is None or query.phone in phones(delivery))
        and (query.email is None or (delivery.recipient.email or "").lower() == query.email.lower())
        and (query.idempotency_key is None or delivery.idempotency_key == query.idempotency_key)
    )


#: The recipient fields a phone number is searched in (`DeliveryQuery.phone`).
PHONE_FIELDS = ("whatsapp", "sms", "call")


def phones(delivery: Delivery) -> set[str]:
    recipient = delivery.recipient
    return {p for name in PHONE_FIELDS if (p := getattr(recipient, name)) is not None}


def cost(delivery: Delivery) -> float | None:
    costs = [a.cost for a in delivery.attempts if a.cost is not None]
    return sum(costs) if costs else None


def summary(delivery: Delivery) -> DeliverySummary:
    return DeliverySummary(
        id=delivery.id,
        policy=delivery.policy,
        recipient_id=delivery.recipient.id,
        status=delivery.status,
        channel=delivery.channel,
        created_ts=delivery.created_ts,
        finished_ts=delivery.finished_ts,
        attempts=len(delivery.attempts),
        cost=cost(delivery),
    )


def page(
    deliveries: Iterable[Delivery], query: DeliveryQuery, cursor: str | None, limit: int
) -> DeliveryPage:
    """Newest first, after `cursor`: (created_ts, id) descending."""
    check_limit(limit)
    after = decode_cursor(cursor) if cursor is not None else None
    chosen = [
        d
        for d in deliveries
        if matches(d, query) and (after is None or (d.created_ts, d.id) < after)
    ]
    chosen.sort(key=lambda d: (d.created_ts, d.id), reverse=True)
    return page_of([summary(d) for d in chosen[: limit + 1]], limit)


def page_of(found: Sequence[DeliverySummary], limit: int) -> DeliveryPage:
    """A page from up to `limit + 1` summaries in order (one more says there is a next)."""
    items = tuple(found[:limit])
    more = len(found) > limit
    last = items[-1] if items else None
    cursor = encode_cursor(last.created_ts, last.id) if more and last is not None else None
    return DeliveryPage(items=items, cursor=cursor)


@dataclass(slots=True)
class _Figures:
    sent: int = 0
    delivered: int = 0
    read: int = 0
    failed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    won: int = 0
    median: float | None = None
    p95: float | None = None
    rescues: int = 0
    spent: float | None = None


class Rows:
    """The figures of each group, added to from the partial results of each query."""

    def __init__(self) -> None:
        self._rows: dict[Key, _Figures] = {}

    def _at(self, key: Key) -> _Figures:
        found = self._rows.get(key)
        if found is None:
            found = self._rows[key] = _Figures()
        return found

    def attempts(
        self, key: Key, sent: int, delivered: int, read: int, failed: int, spent: float | None
    ) -> None:
        row = self._at(key)
        row.sent += sent
        row.delivered += delivered
        row.read += read
        row.failed += failed
        if spent is not None:
            row.spent = (row.spent or 0.0) + spent

    def skipped(self, key: Key, reason: str, count: int) -> None:
        row = self._at(key)
        row.skipped[reason] = row.skipped.get(reason, 0) + count

    def won(
        self, key: Key, won: int, rescues: int, median: float | None, p95: float | None
    ) -> None:
        row = self._at(key)
        row.won, row.rescues, row.median, row.p95 = won, rescues, median, p95

    def build(self) -> tuple[StatsRow, ...]:
        return tuple(
            StatsRow(
                key=key,
                sent=f.sent,
                delivered=f.delivered,
                read=f.read,
                failed=f.failed,
                skipped=dict(f.skipped),
                won=f.won,
                median_seconds=f.median,
                p95_seconds=f.p95,
                rescues=f.rescues,
                spent=f.spent,
            )
            for key, f in sorted(self._rows.items(), key=lambda item: _order(item[0]))
        )


def _order(key: Key) -> tuple[tuple[int, str | int], ...]:
    # keys of one dimension share a type; None-free, so plain tuples sort
    return tuple((0, part) if isinstance(part, int) else (1, part) for part in key)


def winner(delivery: Delivery) -> Attempt | None:
    """The attempt that ended a delivered cascade: its last attempt on the channel it was
    delivered on that was accepted, delivered or read (the SQL stores' rule too)."""
    if delivery.status is not DeliveryStatus.DELIVERED:
        return None
    for attempt in reversed(delivery.attempts):
        if attempt.channel == delivery.channel and attempt.status.value in WINNING:
            return attempt
    return None


def _key(
    by: Sequence[Dimension],
    delivery: Delivery,
    channel: str,
    step: int,
    provider: str | None,
) -> Key | None:
    parts: list[str | int] = []
    for name in by:
        if name == "channel":
            parts.append(channel)
        elif name == "step":
            parts.append(step)
        elif name == "policy":
            parts.append(delivery.policy)
        elif name == "day":
            parts.append(day_key(int(delivery.created_ts // DAY)))
        else:
            if provider is None:
                return None
            parts.append(provider)
    return tuple(parts)


def stats(
    deliveries: Iterable[Delivery], since: float, until: float, by: Dimension | Sequence[str]
) -> Stats:
    """The statistics of `deliveries` created in `[since, until)`, grouped `by`."""
    dims = check_by(by)
    check_window(since, until)
    rows = Rows()
    outcomes: dict[str, int] = {}
    count = 0
    took: dict[Key, list[float]] = {}
    rescued: dict[Key, int] = {}
    for delivery in deliveries:
        if not since <= delivery.created_ts < until:
            continue
        count += 1
        outcomes[delivery.status.value] = outcomes.get(delivery.status.value, 0) + 1
        for attempt in delivery.attempts:
            key = _key(dims, delivery, attempt.channel, attempt.step, attempt.provider)
            assert key is not None
            status = attempt.status.value
            rows.attempts(
                key,
                1,
                int(status in REACHED),
                int(status == "read"),
                int(status in FAILED),
                attempt.cost,
            )
        for skip in delivery.skipped:
            key = _key(dims, delivery, skip.channel, skip.step, None)
            if key is not None:
                rows.skipped(key, skip.reason, 1)
        won = winner(delivery)
        if won is not None and delivery.finished_ts is not None:
            key = _key(dims, delivery, won.channel, won.step, won.provider)
            assert key is not None
            took.setdefault(key, []).append(delivery.finished_ts - delivery.created_ts)
            first = min(a.step for a in delivery.attempts)
            rescued[key] = rescued.get(key, 0) + int(won.step > first)
    for key, values in took.items():
        values.sort()
        median, p95 = (percentile(values, p) for p in PERCENTILES)
        rows.won(key, len(values), rescued[key], median, p95)
    return Stats(
        since=since,
        until=until,
        by=dims,
        deliveries=count,
        outcomes=outcomes,
        rows=rows.build(),
    )


def failures(deliveries: Iterable[Delivery], since: float, until: float) -> list[FailureRow]:
    """The failed attempts of the deliveries created in `[since, until)`, by channel,
    provider, status and code, most frequent first (then by those four)."""
    check_window(since, until)
    counts: dict[tuple[str, str, str, str], int] = {}
    examples: dict[tuple[str, str, str, str], str] = {}
    for delivery in deliveries:
        if not since <= delivery.created_ts < until:
            continue
        for a in delivery.attempts:
            if a.status.value not in FAILED:
                continue
            # an error at send is the attempt's own; a failed receipt's is on the receipt
            told = next((r for r in reversed(a.receipts) if r.status.value == "failed"), None)
            code = a.code if a.code is not None else told.code if told is not None else None
            error = a.error if a.error is not None else told.error if told is not None else None
            key = (a.channel, a.provider, a.status.value, code or "")
            counts[key] = counts.get(key, 0) + 1
            if error is not None and error > examples.get(key, ""):
                examples[key] = error  # the greatest, as SQL's max() picks
    rows = [
        FailureRow(channel=c, provider=p, status=s, code=code, count=n,
                   example=examples.get((c, p, s, code)))
        for (c, p, s, code), n in counts.items()
    ]  # fmt: skip
    rows.sort(key=lambda r: (-r.count, r.channel, r.provider, r.status, r.code))
    return rows[:MAX_FAILURE_ROWS]
