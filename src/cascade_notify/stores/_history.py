"""What a delivery of a learned-order policy teaches its recipient's history, one
definition for every store: from a transition (a success, an unreachable address) and
from a receipt (delivered, read, failed). Only deliveries with an `Order` teach."""

from __future__ import annotations

from collections.abc import Iterable

from cascade_notify.learned import HISTORY_LIMIT, Lesson, Seen, failed, reached
from cascade_notify.models import AttemptStatus, Delivery, DeliveryStatus, ReceiptStatus
from cascade_notify.stores.base import Transition


def from_transition(delivery: Delivery, transition: Transition) -> list[Lesson]:
    """What writing `transition` to `delivery` (as it was before) teaches."""
    if delivery.order is None:
        return []
    rid = delivery.recipient.id
    lessons = [
        failed(rid, a.channel, a.finished_ts if a.finished_ts is not None else a.started_ts)
        for a in transition.attempts
        if a.status is AttemptStatus.UNREACHABLE
    ]
    if transition.status is DeliveryStatus.DELIVERED and transition.channel is not None:
        channel = transition.channel
        read = any(
            a.channel == channel and a.status is AttemptStatus.READ
            for a in (*delivery.attempts, *transition.attempts)
        )
        ts = transition.finished_ts if transition.finished_ts is not None else 0.0
        lessons.append(reached(rid, channel, ts, read=read))
    return lessons


def from_receipt(
    recipient_id: str, channel: str, status: ReceiptStatus, after: AttemptStatus, ts: float
) -> Lesson | None:
    """What a new receipt teaches (`after`: its attempt's status once it is heard)."""
    if status is ReceiptStatus.READ or status is ReceiptStatus.DELIVERED:
        return reached(recipient_id, channel, ts, read=status is ReceiptStatus.READ)
    if status is ReceiptStatus.FAILED and after is AttemptStatus.FAILED:
        return failed(recipient_id, channel, ts)
    return None


def merge_into(book: dict[str, dict[str, Seen]], lessons: Iterable[Lesson]) -> None:
    """The memory store's history: merge `lessons`, keeping `HISTORY_LIMIT` per recipient."""
    for lesson in lessons:
        mine = book.setdefault(lesson.recipient_id, {})
        old = mine.get(lesson.channel)
        mine[lesson.channel] = lesson.seen if old is None else old.merged(lesson.seen)
        if len(mine) > HISTORY_LIMIT:
            del mine[min(mine, key=lambda c: (mine[c].last_ts, c))]


def as_rows(
    lessons: Iterable[Lesson],
) -> list[tuple[str, str, float | None, float | None, float | None]]:
    """`lessons` as rows (recipient id, channel, rank, reached_ts, failed_ts), one per key."""
    merged: dict[tuple[str, str], Seen] = {}
    for lesson in lessons:
        key = (lesson.recipient_id, lesson.channel)
        old = merged.get(key)
        merged[key] = lesson.seen if old is None else old.merged(lesson.seen)
    return [(r, c, s.rank, s.reached_ts, s.failed_ts) for (r, c), s in merged.items()]


def seen_from_rows(rows: Iterable[tuple[object, ...]]) -> dict[str, Seen]:
    """A recipient's history from rows of (channel, rank, reached_ts, failed_ts)."""
    return {str(row[0]): Seen(_f(row[1]), _f(row[2]), _f(row[3])) for row in rows}


def _f(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
