"""What the read-only views return: a page of deliveries, statistics. Plain frozen
dataclasses on the vocabulary alone, so every store can build them."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Final, Literal, get_args

from cascade_notify.errors import CascadeError
from cascade_notify.models import DeliveryStatus

#: What statistics can be grouped by.
Dimension = Literal["channel", "provider", "policy", "step", "day"]
DIMENSIONS: Final[tuple[Dimension, ...]] = get_args(Dimension)

#: Attempt statuses counted as `delivered` (reached the person), `read`, and `failed`.
REACHED: Final = ("delivered", "read")
FAILED: Final = ("failed", "unreachable", "transient", "timed_out")
#: The statuses of the attempt that ended a delivered cascade (its winner).
WINNING: Final = ("accepted", "delivered", "read")
#: The two percentiles of time to delivery every row carries.
PERCENTILES: Final = (0.5, 0.95)

DAY = 86400.0


class QueryError(CascadeError, ValueError):
    """A query for deliveries or statistics is wrong as given (a bad cursor, dimension,
    status or time window); says which argument."""

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryQuery:
    """Which deliveries to list: each filter given narrows it (all of them: AND).

    `channel` keeps deliveries with an attempt on that channel; `since` and `until`
    bound the creation time (POSIX seconds, `since <= created < until`). `phone` (E.164)
    keeps those whose recipient had that number on a phone channel (whatsapp, sms,
    call); `email` those sent to that address (any case); `idempotency_key` the one
    delivery sent with that key. Each of these three is an index lookup on the SQL stores."""

    recipient: str | None = None
    phone: str | None = None
    email: str | None = None
    idempotency_key: str | None = None
    status: DeliveryStatus | None = None
    channel: str | None = None
    policy: str | None = None
    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        if self.status is not None and not isinstance(self.status, DeliveryStatus):
            try:
                object.__setattr__(self, "status", DeliveryStatus(self.status))
            except ValueError:
                known = ", ".join(s.value for s in DeliveryStatus)
                raise QueryError("status", f"{self.status!r} is not one of {known}") from None
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise QueryError(name, f"must be a finite time, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySummary:
    """One line of a delivery list."""

    id: str
    policy: str
    recipient_id: str
    status: DeliveryStatus
    channel: str | None
    created_ts: float
    finished_ts: float | None
    attempts: int
    #: The sum of its attempts' costs (None: no attempt had one).
    cost: float | None = None

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created_ts, UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryPage:
    """Deliveries newest first, and the cursor of the next page (None: this is the last).

    The cursor is opaque; it names the last delivery shown, so deliveries created
    meanwhile (newer ones) never shift a later page."""

    items: tuple[DeliverySummary, ...]
    cursor: str | None


def encode_cursor(created_ts: float, delivery_id: str) -> str:
    raw = json.dumps([created_ts, delivery_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (created_ts, id) a cursor names; QueryError if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_ts, delivery_id = json.loads(raw)
        if isinstance(created_ts, int | float) and isinstance(delivery_id, str):
            return float(created_ts), delivery_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        pass
    raise QueryError("cursor", f"{cursor[:40]!r} is not a cursor from a previous page")


Key = tuple[str | int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsRow:
    """The figures of one group (`key`: its value for each dimension of `Stats.by`;
    a `day` is `YYYY-MM-DD` in UTC, a `step` the step's index in its policy).

    Attempt counts: `sent` (every attempt made), `delivered` (reached the person:
    delivered or read), `read`, `failed` (failed, unreachable, transient, timed out).
    `skipped`: steps passed over, by reason (not grouped by provider: a skip has none).
    `delivery_rate`: delivered / sent. `won`: deliveries that ended delivered by this
    group's attempt; `median_seconds`, `p95_seconds`: their time from send to delivered
    (interpolated, as PostgreSQL's `percentile_cont`); `rescues`: how many of them an
    earlier step had been tried for first, and failed. `spent`: the sum of the
    attempts' costs (None: no attempt here had a cost).
    """

    key: Key
    sent: int = 0
    delivered: int = 0
    read: int = 0
    failed: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)
    won: int = 0
    median_seconds: float | None = None
    p95_seconds: float | None = None
    rescues: int = 0
    spent: float | None = None

    @property
    def delivery_rate(self) -> float | None:
        return self.delivered / self.sent if self.sent else None

    def to_dict(self, by: Sequence[Dimension]) -> dict[str, object]:
        data: dict[str, object] = dict(zip(by, self.key, strict=True))
        data.update(
            sent=self.sent,
            delivered=self.delivered,
            read=self.read,
            failed=self.failed,
            skipped=dict(sorted(self.skipped.items())),
            delivery_rate=self.delivery_rate,
            won=self.won,
            median_seconds=self.median_seconds,
            p95_seconds=self.p95_seconds,
            rescues=self.rescues,
            spent=self.spent,
        )
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """Statistics of the deliveries created in `[since, until)`, grouped `by`.

    `deliveries`: how many; `outcomes`: how many ended each way (status -> count).
    `rows` are sorted by key."""

    since: float
    until: float
    by: tuple[Dimension, ...]
    deliveries: int
    outcomes: Mapping[str, int]
    rows: tuple[StatsRow, ...]

    @property
    def delivered_share(self) -> float | None:
        """Delivered deliveries / deliveries that ended (None: none ended)."""
        ended = sum(n for s, n in self.outcomes.items() if s != DeliveryStatus.PENDING.value)
        return self.outcomes.get(DeliveryStatus.DELIVERED.value, 0) / ended if ended else None

    def row(self, *key: str | int) -> StatsRow | None:
        """The row of `key`, or None."""
        return next((r for r in self.rows if r.key == key), None)

    def to_dict(self) -> dict[str, object]:
        return {
            "since": datetime.fromtimestamp(self.since, UTC).isoformat(),
            "until": datetime.fromtimestamp(self.until, UTC).isoformat(),
            "by": list(self.by),
            "deliveries": self.deliveries,
            "outcomes": dict(sorted(self.outcomes.items())),
            "delivered_share": self.delivered_share,
            "rows": [r.to_dict(self.by) for r in self.rows],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureRow:
    """Failed attempts of one kind in a window: on `channel` at `provider`, ended `status`
    (failed, unreachable, transient, timed out) with the provider's `code` ("" when it gave
    none); `count` of them, and `example`, one of their error texts (as the provider
    wrote it: escape it before showing it)."""

    channel: str
    provider: str
    status: str
    code: str
    count: int
    example: str | None = None


#: The most kinds of failure `failures` returns, most frequent first.
MAX_FAILURE_ROWS = 50


def check_by(by: Dimension | Sequence[str]) -> tuple[Dimension, ...]:
    """`by` as a tuple of known dimensions, each once; QueryError otherwise."""
    given = (by,) if isinstance(by, str) else tuple(by)
    for name in given:
        if name not in DIMENSIONS:
            raise QueryError("by", f"{name!r} is not one of {', '.join(DIMENSIONS)}")
    if len(set(given)) != len(given):
        raise QueryError("by", f"{', '.join(given)} names a dimension twice")
    return given  # type: ignore[return-value]


def check_window(since: float, until: float) -> None:
    if not (math.isfinite(since) and math.isfinite(until)):
        raise QueryError("since", "the window must be finite times")
    if since > until:
        raise QueryError("since", "the window starts after it ends")


def day_key(day_number: int) -> str:
    """The `day` dimension's key of a day number (POSIX seconds // 86400)."""
    return date.fromordinal(date(1970, 1, 1).toordinal() + int(day_number)).isoformat()


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """`percentile_cont(p)` of values in order: linear between the two nearest ranks."""
    if not sorted_values:
        return None
    return interpolate({i + 1: v for i, v in enumerate(sorted_values)}, len(sorted_values), p)


def ranks(n: int, p: float) -> tuple[int, int]:
    """The two 1-based ranks `percentile_cont(p)` of n values reads."""
    low = math.floor(p * (n - 1))
    return low + 1, min(low + 2, n)


def interpolate(by_rank: Mapping[int, float], n: int, p: float) -> float:
    position = p * (n - 1)
    low, high = ranks(n, p)
    below, above = by_rank[low], by_rank[high]
    return below + (position - math.floor(position)) * (above - below)


__all__ = [
    "DIMENSIONS",
    "DeliveryPage",
    "DeliveryQuery",
    "DeliverySummary",
    "Dimension",
    "FailureRow",
    "QueryError",
    "Stats",
    "StatsRow",
]
