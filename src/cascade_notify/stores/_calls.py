"""The call queue's rules and row shape, shared by every store (`CallQueue`): what a
claim and a close do to a call, decided in Python so the stores cannot drift apart."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

from cascade_notify.models import OPEN_CALL, CallStatus, QueuedCall
from cascade_notify.stores._codec import dumps, loads

COLUMNS: Final = (
    "task_id", "provider", "delivery_id", "recipient_id", "phone", "text", "summary",
    "not_before", "due_by", "created_ts", "task", "status", "operator", "claimed_ts",
    "finished_ts", "note",
)  # fmt: skip


def values(call: QueuedCall) -> tuple[Any, ...]:
    """The row of `call`, in `COLUMNS` order."""
    return (
        call.task_id, call.provider, call.delivery_id, call.recipient_id, call.phone,
        call.text, call.summary, call.not_before, call.due_by, call.created_ts,
        dumps(call.task), call.status.value, call.operator, call.claimed_ts,
        call.finished_ts, call.note,
    )  # fmt: skip


def from_row(row: Sequence[Any]) -> QueuedCall:
    data = dict(zip(COLUMNS, row, strict=True))
    data["task"] = loads(data["task"]) if data["task"] is not None else {}
    data["status"] = CallStatus(data["status"])
    for key in ("not_before", "due_by", "created_ts"):
        data[key] = float(data[key])
    for key in ("claimed_ts", "finished_ts"):
        data[key] = None if data[key] is None else float(data[key])
    return QueuedCall(**data)


def claimed(call: QueuedCall, operator: str, now: float, named: bool) -> QueuedCall | None:
    """`call` claimed by `operator`, or None if it may not be: it must be open (a named
    one also if it is this operator's already), and, unless named, its window begun."""
    mine = call.status is CallStatus.CLAIMED and call.operator == operator
    if call.status is not CallStatus.OPEN and not (named and mine):
        return None
    if not named and call.not_before > now:
        return None
    return dataclasses.replace(call, status=CallStatus.CLAIMED, operator=operator, claimed_ts=now)


def closed(call: QueuedCall, status: CallStatus, now: float, note: str | None) -> QueuedCall | None:
    """`call` ended as `status` (reopened for `open`), or None: it is final already."""
    if call.status not in OPEN_CALL:
        return None
    if status is CallStatus.OPEN:
        return dataclasses.replace(
            call, status=status, operator=None, claimed_ts=None,
            note=note if note is not None else call.note,
        )  # fmt: skip
    if status is CallStatus.CLAIMED:
        raise ValueError("a call is claimed with claim_call, not closed as claimed")
    return dataclasses.replace(
        call, status=status, finished_ts=now, note=note if note is not None else call.note
    )


def wanted(status: Sequence[CallStatus] | None) -> list[str] | None:
    return None if status is None else [CallStatus(s).value for s in status]


__all__ = ["COLUMNS", "claimed", "closed", "from_row", "values", "wanted"]
