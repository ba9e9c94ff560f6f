"""One delivery's story in time order: what `cascade-notify status` shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo

from cascade_notify.models import Delivery

Kind = Literal["created", "skipped", "attempt", "receipt", "finished"]
# at one instant: a receipt heard (what made the engine move on), then the steps it
# skipped, then the attempt it made, then the end; an attempt's own receipt after it
_ORDER: dict[str, float] = {
    "created": 0,
    "receipt": 1,
    "skipped": 2,
    "attempt": 3,
    "finished": 5,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One thing that happened: `at` seconds after the delivery was created (`offset`).

    `status` is the attempt's (for an attempt), the receipt's, or the delivery's (when
    it finished); `detail` the skip's reason and detail, or an error."""

    ts: float
    offset: float
    kind: Kind
    step: int | None = None
    channel: str | None = None
    provider: str | None = None
    status: str | None = None
    detail: str | None = None
    code: str | None = None
    cost: float | None = None
    attempt_id: str | None = None

    def at(self, zone: tzinfo) -> datetime:
        return datetime.fromtimestamp(self.ts, zone)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    """The delivery and its entries in time order; `zone` is the recipient's time zone
    (UTC when the recipient has none)."""

    delivery: Delivery
    zone: tzinfo
    entries: tuple[Entry, ...]

    @property
    def zone_name(self) -> str:
        return str(self.zone)

    def to_dict(self) -> dict[str, object]:
        d = self.delivery
        return {
            "id": d.id,
            "policy": d.policy,
            "route": None if d.route is None else d.route.to_dict(),
            "order": None if d.order is None else d.order.to_dict(),
            "recipient": d.recipient.id,
            "status": d.status.value,
            "channel": d.channel,
            "timezone": self.zone_name,
            "created_at": datetime.fromtimestamp(d.created_ts, self.zone).isoformat(),
            "finished_at": None
            if d.finished_ts is None
            else datetime.fromtimestamp(d.finished_ts, self.zone).isoformat(),
            "expires_at": datetime.fromtimestamp(d.expires_ts, self.zone).isoformat(),
            "cost": sum(a.cost for a in d.attempts if a.cost is not None)
            if any(a.cost is not None for a in d.attempts)
            else None,
            "entries": [
                {
                    "kind": e.kind,
                    "at": e.at(self.zone).isoformat(),
                    "at_utc": e.at(UTC).isoformat(),
                    "offset_seconds": e.offset,
                    "step": e.step,
                    "channel": e.channel,
                    "provider": e.provider,
                    "status": e.status,
                    "detail": e.detail,
                    "code": e.code,
                    "cost": e.cost,
                    "attempt_id": e.attempt_id,
                }
                for e in self.entries
            ],
        }


def zone_of(delivery: Delivery) -> tzinfo:
    name = delivery.recipient.timezone
    return ZoneInfo(name) if name else UTC


def timeline(delivery: Delivery) -> Timeline:
    """The timeline of `delivery` (a snapshot from `notifier.get` or a store)."""
    start = delivery.created_ts
    starts = {a.id: a.started_ts for a in delivery.attempts}
    made = delivery.policy
    if delivery.route is not None:  # how the policy was chosen
        made = f"{made} by {delivery.route.describe()}"
    if delivery.order is not None:  # how the steps were ordered for this recipient
        made = f"{made}; {delivery.order.describe()}"
    entries = [Entry(ts=start, offset=0.0, kind="created", detail=made)]
    for skip in delivery.skipped:
        detail = skip.reason if skip.detail is None else f"{skip.reason}: {skip.detail}"
        entries.append(
            Entry(
                ts=skip.ts,
                offset=skip.ts - start,
                kind="skipped",
                step=skip.step,
                channel=skip.channel,
                status=skip.reason,
                detail=detail,
            )
        )
    for attempt in delivery.attempts:
        entries.append(
            Entry(
                ts=attempt.started_ts,
                offset=attempt.started_ts - start,
                kind="attempt",
                step=attempt.step,
                channel=attempt.channel,
                provider=attempt.provider,
                status=attempt.status.value,
                detail=attempt.error,
                code=attempt.code,
                cost=attempt.cost,
                attempt_id=attempt.id,
            )
        )
        for receipt in attempt.receipts:
            entries.append(
                Entry(
                    ts=receipt.ts,
                    offset=receipt.ts - start,
                    kind="receipt",
                    step=attempt.step,
                    channel=attempt.channel,
                    provider=receipt.provider,
                    status=receipt.status.value,
                    detail=receipt.error,
                    code=receipt.code,
                    attempt_id=attempt.id,
                )
            )
    if delivery.finished_ts is not None:
        entries.append(
            Entry(
                ts=delivery.finished_ts,
                offset=delivery.finished_ts - start,
                kind="finished",
                channel=delivery.channel,
                status=delivery.status.value,
            )
        )
    entries.sort(key=lambda e: (e.ts, _rank(e, starts)))
    return Timeline(delivery=delivery, zone=zone_of(delivery), entries=tuple(entries))


def _rank(entry: Entry, starts: dict[str, float]) -> float:
    if entry.kind == "receipt" and starts.get(entry.attempt_id or "") == entry.ts:
        return 4  # heard at once: after its attempt
    return _ORDER[entry.kind]
