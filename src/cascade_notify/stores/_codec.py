"""Rows and JSON for the SQL stores: one encoding shared by SQLite and PostgreSQL.

Scalars a query filters on (status, timers, lease, provider message id) get
columns of their own; what is only ever read back whole (recipient, message,
steps, skipped steps) is JSON text. Both stores select the same columns in
the same order, so one set of `*_from_row` functions reads either.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from cascade_notify.errors import StoreError
from cascade_notify.models import (
    Attempt,
    AttemptStatus,
    Delivery,
    DeliveryStatus,
    Message,
    Order,
    Priority,
    Receipt,
    ReceiptStatus,
    Recipient,
    Route,
    SkippedStep,
    Step,
    WaitFor,
)

#: Columns of `deliveries` that `delivery_from_row` reads, in this order.
DELIVERY_COLUMNS = (
    "id",
    "policy",
    "status",
    "step",
    "channel",
    "created_ts",
    "expires_ts",
    "finished_ts",
    "wake_ts",
    "idempotency_key",
    "recipient",
    "message",
    "steps",
    "skipped",
    "unusable",
    "fingerprint",
    "priority",
)
#: Columns of `attempts` that `attempt_from_row` reads, in this order.
ATTEMPT_COLUMNS = (
    "id",
    "delivery_id",
    "step",
    "channel",
    "provider",
    "status",
    "started_ts",
    "finished_ts",
    "deadline_ts",
    "provider_message_id",
    "error",
    "code",
    "retry_ts",
    "cost",
    "segments",
    "encoding",
    "currency",
)
#: Columns of `receipts` (and of orphan receipts) that `receipt_from_row` reads.
#: `echoed_attempt_id` is `Receipt.attempt_id`: the attempt id the provider echoed, if any.
RECEIPT_COLUMNS = (
    "provider",
    "provider_message_id",
    "status",
    "ts",
    "code",
    "error",
    "receipt_id",
    "echoed_attempt_id",
    "cost",
)

Row = Sequence[Any]


def dumps(value: object) -> str:
    """Compact JSON; a value JSON cannot hold (in `Message.metadata`, say) is a StoreError."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"cannot store this delivery: {exc} (metadata must be plain JSON)"
        ) from exc


def loads(text: str | bytes | Any) -> Any:
    """JSON text to data; a value the driver already decoded (PostgreSQL jsonb) passes through."""
    if isinstance(text, str | bytes):
        return json.loads(text)
    return text


def step_to_dict(step: Step) -> dict[str, Any]:
    data: dict[str, Any] = {
        "channel": step.channel,
        "providers": list(step.providers),
        "wait_for": step.wait_for.value,
        "timeout": step.timeout,
        "retry_attempts": step.retry_attempts,
        "retry_initial": step.retry_initial,
        "retry_max": step.retry_max,
    }
    if step.quiet_hours is not None:
        data["quiet_hours"] = list(step.quiet_hours)
    if step.quiet_wait:
        data["quiet_wait"] = True
    if step.categories is not None:
        data["categories"] = sorted(step.categories)
    if step.withdraw_superseded:
        data["withdraw_superseded"] = True
    if step.options:
        data["options"] = {name: dict(value) for name, value in step.options.items()}
    if step.on_too_long != "skip":
        data["on_too_long"] = step.on_too_long
    if step.max_segments is not None:
        data["max_segments"] = step.max_segments
    if step.transliterate:
        data["transliterate"] = True
    if step.keep_place:
        data["keep_place"] = True
    return data


def step_from_dict(data: dict[str, Any]) -> Step:
    quiet = data.get("quiet_hours")
    categories = data.get("categories")
    return Step(
        channel=data["channel"],
        providers=tuple(data["providers"]),
        wait_for=WaitFor(data["wait_for"]),
        timeout=float(data["timeout"]),
        retry_attempts=int(data["retry_attempts"]),
        retry_initial=float(data["retry_initial"]),
        retry_max=float(data["retry_max"]),
        quiet_hours=None if quiet is None else (int(quiet[0]), int(quiet[1])),
        categories=None if categories is None else frozenset(categories),
        quiet_wait=bool(data.get("quiet_wait", False)),
        withdraw_superseded=bool(data.get("withdraw_superseded", False)),
        options=data.get("options") or {},
        on_too_long=str(data.get("on_too_long", "skip")),
        max_segments=None if data.get("max_segments") is None else int(data["max_segments"]),
        transliterate=bool(data.get("transliterate", False)),
        keep_place=bool(data.get("keep_place", False)),
    )


@functools.lru_cache(maxsize=256)
def encode_steps(steps: tuple[Step, ...]) -> str:
    """A delivery's steps as JSON: a policy's steps are one tuple shared by its deliveries."""
    return dumps([step_to_dict(s) for s in steps])


def steps_from_json(value: str | bytes | Any) -> tuple[Step, ...]:
    """A delivery's steps from their JSON: the text of one policy's steps is the same for
    every delivery on it, so its decoding (frozen, shared) is kept."""
    if isinstance(value, str):
        return _steps_from_text(value)
    return tuple(step_from_dict(s) for s in loads(value))


@functools.lru_cache(maxsize=256)
def _steps_from_text(text: str) -> tuple[Step, ...]:
    return tuple(step_from_dict(s) for s in json.loads(text))


def skipped_to_dict(skip: SkippedStep) -> dict[str, Any]:
    data: dict[str, Any] = {
        "step": skip.step,
        "channel": skip.channel,
        "reason": skip.reason,
        "ts": skip.ts,
    }
    if skip.detail is not None:
        data["detail"] = skip.detail
    return data


def skipped_from_dict(data: dict[str, Any]) -> SkippedStep:
    return SkippedStep(
        step=int(data["step"]),
        channel=data["channel"],
        reason=data["reason"],
        ts=float(data["ts"]),
        detail=data.get("detail"),
    )


def encode_skipped(skipped: Sequence[SkippedStep]) -> str:
    return dumps([skipped_to_dict(s) for s in skipped]) if skipped else "[]"


def decode_skipped(text: str | bytes | Any) -> list[SkippedStep]:
    return [] if text == "[]" else [skipped_from_dict(s) for s in loads(text)]


#: The key of `Delivery.route` in the `unusable` column: both are written once, when
#: the delivery is made, and no channel name can begin with "@" (so no migration).
ROUTE_KEY = "@route"
#: The key of `Delivery.order` there, for the same reasons (the SQL stores' receipts
#: read it to know whether a delivery teaches the recipient's history).
ORDER_KEY = "@order"


def encode_unusable(
    unusable: dict[str, str], route: Route | None = None, order: Order | None = None
) -> str:
    if order is not None:
        data: dict[str, Any] = {**unusable, ORDER_KEY: order.to_dict()}
        if route is not None:
            data[ROUTE_KEY] = route.to_dict()
        return dumps(data)
    if route is None:
        return dumps(unusable) if unusable else "{}"
    if not unusable:
        return _route_only(route)
    return dumps({**unusable, ROUTE_KEY: route.to_dict()})


@functools.lru_cache(maxsize=1024)
def _route_only(route: Route) -> str:
    """The column of a delivery with no unusable channel: one text per route of a file."""
    return dumps({ROUTE_KEY: route.to_dict()})


Unusable = tuple[dict[str, str], Route | None, Order | None]


def decode_unusable(value: str | bytes | Any) -> Unusable:
    """`Delivery.unusable`, `Delivery.route` and `Delivery.order` from their column (text,
    or what the driver decoded of jsonb)."""
    if value is None or value == "{}" or value == {}:
        return {}, None, None
    if isinstance(value, str):
        unusable, route, order = _decoded_text(value)
        return dict(unusable), route, order
    return _decoded(loads(value))


@functools.lru_cache(maxsize=1024)
def _decoded_text(text: str) -> Unusable:
    return _decoded(json.loads(text))


def _decoded(data: dict[str, Any]) -> Unusable:
    route, order = data.get(ROUTE_KEY), data.get(ORDER_KEY)
    unusable = {
        str(c): str(reason) for c, reason in data.items() if c not in (ROUTE_KEY, ORDER_KEY)
    }
    return (
        unusable,
        None if route is None else Route.from_dict(route),
        None if order is None else Order.from_dict(order),
    )


def delivery_values(delivery: Delivery) -> tuple[Any, ...]:
    """`delivery` as values for `DELIVERY_COLUMNS`."""
    return (
        delivery.id,
        delivery.policy,
        delivery.status.value,
        delivery.step,
        delivery.channel,
        delivery.created_ts,
        delivery.expires_ts,
        delivery.finished_ts,
        delivery.wake_ts,
        delivery.idempotency_key,
        dumps(delivery.recipient.to_dict()),
        dumps(delivery.message.to_dict()),
        encode_steps(delivery.steps),
        encode_skipped(delivery.skipped),
        encode_unusable(delivery.unusable, delivery.route, delivery.order),
        delivery.fingerprint,
        delivery.priority.rank,
    )


class Unchanging:
    """The parts of a delivery that never change once it is created (recipient, message),
    decoded, for the deliveries a process saw lately: a worker claims a delivery again
    and again while its cascade runs, and decoding them was a tenth of a claim. Bounded
    (oldest out first), so memory does not grow with the number of deliveries pending;
    valid whoever else writes the store, because these parts are never written again."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._parts: dict[str, tuple[Recipient, Message]] = {}

    def remember(self, delivery: Delivery) -> None:
        self._put(delivery.id, (delivery.recipient, delivery.message))

    def decode(self, delivery_id: str, recipient: Any, message: Any) -> tuple[Recipient, Message]:
        """The recipient and message of `delivery_id`, from here or from their columns."""
        found = self._parts.get(delivery_id)
        if found is None:
            found = Recipient.restore(loads(recipient)), Message.restore(loads(message))
            self._put(delivery_id, found)
        return found

    def _put(self, delivery_id: str, parts: tuple[Recipient, Message]) -> None:
        if len(self._parts) >= self.size and delivery_id not in self._parts:
            del self._parts[next(iter(self._parts))]
        self._parts[delivery_id] = parts


def delivery_from_row(
    row: Row, attempts: list[Attempt], unchanging: Unchanging | None = None
) -> Delivery:
    """A `Delivery` from a row of `DELIVERY_COLUMNS` and its attempts, in order."""
    if unchanging is None:
        recipient, message = Recipient.restore(loads(row[10])), Message.restore(loads(row[11]))
    else:
        recipient, message = unchanging.decode(row[0], row[10], row[11])
    unusable, route, order = decode_unusable(row[14])
    return Delivery(
        id=row[0],
        policy=row[1],
        status=DeliveryStatus(row[2]),
        step=int(row[3]),
        channel=row[4],
        created_ts=float(row[5]),
        expires_ts=float(row[6]),
        finished_ts=_float(row[7]),
        wake_ts=_float(row[8]),
        idempotency_key=row[9],
        recipient=recipient,
        message=message,
        steps=steps_from_json(row[12]),
        skipped=decode_skipped(row[13]),
        unusable=unusable,
        fingerprint=row[15],
        priority=Priority.of_rank(int(row[16])),
        attempts=attempts,
        route=route,
        order=order,
    )


def attempt_values(attempt: Attempt) -> tuple[Any, ...]:
    """`attempt` as values for `ATTEMPT_COLUMNS` (its receipts are rows of their own)."""
    return (
        attempt.id,
        attempt.delivery_id,
        attempt.step,
        attempt.channel,
        attempt.provider,
        attempt.status.value,
        attempt.started_ts,
        attempt.finished_ts,
        attempt.deadline_ts,
        attempt.provider_message_id,
        attempt.error,
        attempt.code,
        attempt.retry_ts,
        attempt.cost,
        attempt.segments,
        attempt.encoding,
        attempt.currency,
    )


def attempt_from_row(row: Row, receipts: list[Receipt]) -> Attempt:
    # the price a receipt reported wins over the cost written with the attempt (a
    # writer's copy may predate the receipt), the last one heard over earlier ones
    reported = [r.cost for r in receipts if r.cost is not None]
    return Attempt(
        id=row[0],
        delivery_id=row[1],
        step=int(row[2]),
        channel=row[3],
        provider=row[4],
        status=AttemptStatus(row[5]),
        started_ts=float(row[6]),
        finished_ts=_float(row[7]),
        deadline_ts=_float(row[8]),
        provider_message_id=row[9],
        error=row[10],
        code=row[11],
        retry_ts=_float(row[12]),
        cost=reported[-1] if reported else _float(row[13]),
        receipts=receipts,
        segments=None if row[14] is None else int(row[14]),
        encoding=row[15],
        currency=row[16],
    )


def receipt_values(receipt: Receipt) -> tuple[Any, ...]:
    """`receipt` as values for `RECEIPT_COLUMNS`."""
    return (
        receipt.provider,
        receipt.provider_message_id,
        receipt.status.value,
        receipt.ts,
        receipt.code,
        receipt.error,
        receipt.receipt_id,
        receipt.attempt_id,
        receipt.cost,
    )


def receipt_from_row(row: Row) -> Receipt:
    return Receipt(
        provider=row[0],
        provider_message_id=row[1],
        status=ReceiptStatus(row[2]),
        ts=float(row[3]),
        code=row[4],
        error=row[5],
        receipt_id=row[6],
        attempt_id=row[7],
        cost=_float(row[8]),
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
