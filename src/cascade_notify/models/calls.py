"""Call tasks kept in the library's own store (`type: call_queue`): `QueuedCall` and its
`CallStatus`, for teams with no CRM."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final


class CallStatus(StrEnum):
    """Where a queued call stands; `open` and `claimed` are still to be done."""

    OPEN = "open"
    CLAIMED = "claimed"  # an operator took it
    DONE = "done"  # the operator reached the customer
    NO_ANSWER = "no_answer"
    WRONG_NUMBER = "wrong_number"
    CANCELLED = "cancelled"  # withdrawn: the message arrived elsewhere, or the delivery ended

    @property
    def final(self) -> bool:
        return self not in OPEN_CALL


OPEN_CALL: Final = frozenset({CallStatus.OPEN, CallStatus.CLAIMED})


@dataclass(slots=True, kw_only=True)
class QueuedCall:
    """One call for a person to make: whom, about what, by when, and how it went.

    `task` is the whole task as `call_webhook` would post it (providers.md §10.4.1):
    the history, the window, the priority. Times are POSIX seconds.
    """

    task_id: str
    provider: str
    delivery_id: str
    recipient_id: str
    phone: str
    text: str
    summary: str
    not_before: float
    due_by: float
    created_ts: float
    task: dict[str, Any] = field(default_factory=dict)
    status: CallStatus = CallStatus.OPEN
    operator: str | None = None
    claimed_ts: float | None = None
    finished_ts: float | None = None
    note: str | None = None

    @property
    def due_at(self) -> datetime:
        return datetime.fromtimestamp(self.due_by, UTC)

    def copy(self) -> QueuedCall:
        return QueuedCall(
            task_id=self.task_id, provider=self.provider, delivery_id=self.delivery_id,
            recipient_id=self.recipient_id, phone=self.phone, text=self.text,
            summary=self.summary, not_before=self.not_before, due_by=self.due_by,
            created_ts=self.created_ts, task=dict(self.task), status=self.status,
            operator=self.operator, claimed_ts=self.claimed_ts, finished_ts=self.finished_ts,
            note=self.note,
        )  # fmt: skip
