"""What every call provider hands the person who will phone: the task, built once from
the send request (providers.md §10.4.1), and the call window it must fit (§10.4.2).

The window's start is the time of the send: the engine defers a call step that falls
in the recipient's quiet hours until they end (`rules.applies`), so a task is never
created inside them. Its end, `due_by`, is the step's deadline, which the engine caps
at the delivery's expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import Field

from cascade_notify.models import PHONE_CHANNELS, Attempt, AttemptStatus, Delivery, SkippedStep
from cascade_notify.providers.base import ProviderOverrides, SendRequest

#: A failed call receipt's code that makes the number unusable on every phone channel
#: (a wrong number is wrong on all of them).
GONE_ON: Final = {"wrong_number": tuple(sorted(PHONE_CHANNELS))}
#: What the task's text ends with, so the task can be found again in the CRM.
MARKER: Final = "[cascade_notify {task_id}]"

_NAMES: Final = {
    "whatsapp": "WhatsApp",
    "telegram": "Telegram",
    "viber": "Viber",
    "max": "MAX",
    "vk": "VK",
    "sms": "SMS",
    "email": "E-mail",
    "app": "App",
}
_OUTCOMES: Final = {
    AttemptStatus.UNREACHABLE: "unreachable",
    AttemptStatus.FAILED: "failed",
    AttemptStatus.TIMED_OUT: "expired",
    AttemptStatus.TRANSIENT: "failed",
    AttemptStatus.UNKNOWN: "expired",
    AttemptStatus.ABANDONED: "expired",
}


class CallOverrides(ProviderOverrides):
    """A call step's `options:` (or `Message.overrides["call"]`): who should call, how
    urgently, and the customer's name for the operator."""

    priority: Literal["low", "normal", "high"] = Field(
        default="normal", description="How urgent the call is, for the operator."
    )
    queue: str | None = Field(
        default=None, max_length=200, description="The operators' queue the task is for."
    )
    user_ref: str | None = Field(
        default=None,
        max_length=200,
        description="The operator the task is for, in the call centre's own terms.",
    )
    customer_name: str | None = Field(
        default=None, max_length=200, description="The customer's name, for the operator."
    )
    title: str | None = Field(
        default=None,
        max_length=255,
        description="The task's title; default `Call the customer: <the text's first line>`.",
    )


def iso(ts: float) -> str:
    """UTC RFC 3339 with a `Z`, to the second."""
    return datetime.fromtimestamp(int(ts), UTC).isoformat().replace("+00:00", "Z")


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True, slots=True)
class CallTask:
    """One call task: everything §10.4.1 carries, for any call provider to write out."""

    task_id: str
    delivery_id: str
    idempotency_key: str | None
    phone: str
    customer: dict[str, Any]
    message: dict[str, Any]
    text: str
    reason: str
    summary: str
    attempts: list[dict[str, Any]]
    not_before: float
    due_by: float
    quiet_hours: dict[str, str] | None
    priority: str
    queue: str | None
    user_ref: str | None
    title: str

    @property
    def marker(self) -> str:
        return MARKER.format(task_id=self.task_id)

    def description(self) -> str:
        """The text an operator reads in a CRM: what failed, the message, our marker."""
        return f"{self.summary}\nMessage: {self.text}\n{self.marker}"

    def payload(self, callback_url: str | None) -> dict[str, Any]:
        """The `data` of `call_task.created` (§10.4.1)."""
        return {
            "task_id": self.task_id,
            "delivery_id": self.delivery_id,
            "idempotency_key": self.idempotency_key,
            "customer": self.customer,
            "message": self.message,
            "reason": self.reason,
            "summary": self.summary,
            "attempts": self.attempts,
            "window": {
                "not_before": iso(self.not_before),
                "due_by": iso(self.due_by),
                "quiet_hours": self.quiet_hours,
            },
            "priority": self.priority,
            "assignee": {"queue": self.queue, "user_ref": self.user_ref},
            "callback_url": callback_url,
        }


def build_task(request: SendRequest, now: float) -> CallTask:
    """The call task for `request` at `now` (the send's time, outside quiet hours)."""
    delivery = request.delivery
    options = request.overrides
    assert isinstance(options, CallOverrides)
    prior = [a for a in delivery.attempts if a.id != request.attempt_id] if delivery else []
    skipped = list(delivery.skipped) if delivery else []
    due = request.deadline_ts if request.deadline_ts is not None else now + 86400.0
    if delivery is not None:
        due = min(due, delivery.expires_ts)
    recipient = request.recipient
    return CallTask(
        task_id=request.attempt_id,
        delivery_id=request.delivery_id,
        idempotency_key=delivery.idempotency_key if delivery else None,
        phone=request.address,
        customer={
            "id": recipient.id,
            "name": options.customer_name,
            "phone": request.address,
            "locale": recipient.locale,
            "time_zone": recipient.timezone,
        },
        message={
            "category": request.message.category,
            "text": request.message.text,
            "created_at": iso(delivery.created_ts if delivery else now),
        },
        text=request.message.text,
        reason=_reason(prior, skipped),
        summary=summary(prior, skipped),
        attempts=history(prior, skipped),
        not_before=now,
        due_by=due,
        quiet_hours=_quiet(delivery, request.channel),
        priority=options.priority,
        queue=options.queue,
        user_ref=options.user_ref,
        title=options.title or f"Call the customer: {_first_line(request.message.text)}",
    )


def _first_line(text: str, limit: int = 80) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _quiet(delivery: Delivery | None, channel: str) -> dict[str, str] | None:
    if delivery is None:
        return None
    step = next((s for s in delivery.steps if s.channel == channel), None)
    if step is None or step.quiet_hours is None:
        return None
    start, end = step.quiet_hours
    return {
        "start": _hhmm(start),
        "end": _hhmm(end),
        "time_zone": delivery.recipient.timezone or "UTC",
    }


def _reason(prior: list[Attempt], skipped: list[SkippedStep]) -> str:
    if not prior and not skipped:
        return "policy"
    last = {a.channel: a for a in prior}
    if last and all(a.status is AttemptStatus.TIMED_OUT for a in last.values()):
        return "expired_channels"
    return "exhausted"


def _name(channel: str) -> str:
    return _NAMES.get(channel, channel)


def summary(prior: list[Attempt], skipped: list[SkippedStep]) -> str:
    """One line per channel for the operator: what became of it."""
    parts: dict[str, str] = {}
    for skip in skipped:
        parts[skip.channel] = f"{_name(skip.channel)}: skipped ({skip.reason})"
    for attempt in prior:
        what = attempt.error or attempt.status.value.replace("_", " ")
        code = f" ({attempt.code})" if attempt.code and attempt.code not in what else ""
        parts[attempt.channel] = f"{_name(attempt.channel)}: {what}{code}"
    if not parts:
        return "No other channel was tried."
    return ". ".join(p.rstrip(".") for p in parts.values()) + "."


def history(prior: list[Attempt], skipped: list[SkippedStep]) -> list[dict[str, Any]]:
    """The machine-readable history: channel, provider, outcome, code, time."""
    rows: list[tuple[float, dict[str, Any]]] = []
    for attempt in prior:
        row: dict[str, Any] = {
            "channel": attempt.channel,
            "provider": attempt.provider,
            "outcome": _OUTCOMES.get(attempt.status, attempt.status.value),
            "code": attempt.code,
            "at": iso(attempt.finished_ts or attempt.started_ts),
        }
        rows.append((attempt.started_ts, row))
    for skip in skipped:
        rows.append(
            (skip.ts, {"channel": skip.channel, "outcome": "skipped", "reason": skip.reason})
        )
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


__all__ = [
    "GONE_ON",
    "MARKER",
    "CallOverrides",
    "CallTask",
    "build_task",
    "history",
    "iso",
    "summary",
]
