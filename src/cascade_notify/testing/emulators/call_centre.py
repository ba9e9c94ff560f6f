"""A fake call centre: the receiver of `call_webhook` tasks (providers.md §10.4.6).

`POST /hooks/call-tasks` takes `call_task.created` and `call_task.cancelled`, signed the
Standard Webhooks way; a bad signature, a stale timestamp or a body that is not JSON is
refused (401, 400) and counted in `rejected`. Per customer phone, the script says how
it answers the task and what the operator reports afterwards, as a signed
`call_task.completed` posted to the task's `callback_url` (else `webhook_url`):

| script entry | answer | callbacks |
|---|---|---|
| `deliver` (default) | 200 `{"crm_task_id"}` | `answered` (after `delivered` s, 1 by default) |
| `read` | 200 | `no_answer` with `final: false`, then `answered` |
| `fail_receipt` | 200 | `no_answer` with `final: true` (`detail: wrong_number` for that) |
| `duplicate_receipts` | 200 | `answered` twice, with the same `webhook-id` |
| `out_of_order` | 200 | `answered`, then the earlier `no_answer` (`final: false`) |
| `no_receipt` | 200 | none |
| `conflict`, `bad_request`, `gone` | 409, 400, 410 | none |
| `rate_limited`, `server_error` | 429 (`Retry-After`), 503 | none |
| `slow`, `hang_up` | late, or no answer at all | as `then` says |

An operator reports by hand with `event("answered" | "no_answer" | "wrong_number",
phone, final=True)`; `event("forged", phone, how=...)` posts a callback the receiver must
refuse: `bad_signature`, `whsec_key` (keyed with the `whsec_` text, not its bytes),
`stale` (timestamp 6 minutes old), `tampered` (body changed after signing).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from aiohttp import web

from cascade_notify.clock import Clock
from cascade_notify.providers._signing import (
    BadSignature,
    StandardWebhooks,
    decode_whsec,
    wall_time,
)
from cascade_notify.testing.emulators._base import (
    Accepted,
    Emulator,
    Handler,
    Webhook,
    compact,
    json_answer,
)
from cascade_notify.testing.emulators._script import RECEIPT_DELAYS, Entry

TEST_SECRET: Final = "whsec_Y2FzY2FkZS1ub3RpZnktdGVzdC1rZXkh"
PATH: Final = "/hooks/call-tasks"
FORGERIES: Final = ("bad_signature", "whsec_key", "stale", "tampered")
ERRORS: Final[Mapping[str, int]] = {
    "conflict": 409,
    "bad_request": 400,
    "gone": 410,
    "rate_limited": 429,
    "server_error": 503,
}


class CallCentreEmulator(Emulator):
    """A call centre that takes `call_webhook` tasks; `secret` is the shared `whsec_`."""

    name: ClassVar[str] = "call_centre"
    errors: ClassVar[Mapping[str, Any]] = ERRORS
    events: ClassVar[tuple[str, ...]] = ("answered", "no_answer", "wrong_number", "forged")

    def __init__(
        self,
        *,
        secret: str = TEST_SECRET,
        webhook_url: str | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        super().__init__(webhook_url=webhook_url, clock=clock, **options)
        self.secret = secret
        self._signer = StandardWebhooks([decode_whsec(secret)])
        self._crm_ids = itertools.count(5531)
        #: Tasks by task id: the last `call_task.created` body's `data`.
        self.tasks: dict[str, dict[str, Any]] = {}
        #: Task ids cancelled by `call_task.cancelled`, in order.
        self.cancelled: list[str] = []
        #: Requests refused for their signature or body (why, each).
        self.rejected: list[str] = []

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "call_webhook",
            "url": self.api_url + PATH,
            "secret": self.secret,
        }
        if self.webhook_url:
            out["callback_url"] = self.webhook_url
        return out

    def normalize(self, address: str) -> str:
        return address.replace(" ", "")

    def _routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", PATH, self._task)]

    def _reset_state(self) -> None:
        self.tasks.clear()
        self.cancelled.clear()
        self.rejected.clear()

    def _sign(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json", **self._signer.sign(_hook_id(body), body)}

    # -- the receiver ---------------------------------------------------------

    async def _task(self, request: web.Request) -> web.StreamResponse:
        record = self.record_of(request)
        try:
            self._signer.verify(record.headers, record.body)
        except BadSignature as exc:
            self.rejected.append(exc.reason)
            return json_answer({"error": exc.reason}, status=401)
        try:
            envelope = json.loads(record.body)
            data = envelope["data"]
            kind = envelope["type"]
            task_id = str(data["task_id"])
        except (ValueError, KeyError, TypeError):
            self.rejected.append("malformed")
            return json_answer({"error": "malformed task"}, status=400)
        if kind == "call_task.cancelled":
            self.cancelled.append(task_id)
            known = task_id in self.tasks
            return json_answer({"ok": True}, status=200 if known else 404)
        if kind != "call_task.created":
            return json_answer({"error": f"unknown type {kind}"}, status=400)
        phone = str((data.get("customer") or {}).get("phone") or "")
        if task_id in self.tasks:  # the same task again: a retry of a create that worked
            record.address = self.normalize(phone)
            record.entry = "known"
            return json_answer({"error": "task exists", "task_id": task_id}, status=409)

        def accept() -> Accepted:
            self.tasks[task_id] = data
            crm = str(next(self._crm_ids))
            extra = {
                "task_id": task_id,
                "crm_task_id": crm,
                "callback_url": data.get("callback_url"),
            }
            return Accepted(
                task_id, self.normalize(phone), data.get("message", {}).get("text"), record, extra
            )

        def answer(message: Accepted, entry: Entry) -> web.StreamResponse:
            return json_answer({"crm_task_id": message.data["crm_task_id"]})

        return await self._send(request, phone, accept, answer)

    def _error(self, entry: Entry, address: str) -> web.StreamResponse:
        status = ERRORS[entry.do] if entry.code is None else entry.code
        headers = {}
        if entry.do == "rate_limited":
            headers["Retry-After"] = str(entry.retry_after if entry.retry_after is not None else 30)
        return json_answer({"error": entry.detail or entry.do}, status=status, headers=headers)

    def _accept(self, accept: Callable[[], Accepted], entry: Entry) -> Accepted:
        message = accept()
        self.outbox.append(message)
        for delay, outcome, final in _plan(entry):
            self._spawn(self._report_later(delay, message, outcome, final))
        return message

    # -- callbacks ------------------------------------------------------------

    async def _report_later(
        self, delay: float, message: Accepted, outcome: str, final: bool
    ) -> None:
        await self.clock.sleep(delay)
        hook = self._callback(message.data, outcome, final)
        if not await self._attempt(hook):
            await self._retry(hook)

    def _callback(
        self, task: Mapping[str, Any], outcome: str, final: bool, forge: str | None = None
    ) -> Webhook:
        data: dict[str, Any] = {
            "task_id": task["task_id"],
            "outcome": outcome,
            "final": final,
            "completed_at": _iso(self.clock.now()),
            "operator": {"id": "42", "name": "Irina"},
            "crm_task_id": task.get("crm_task_id"),
        }
        body = compact(
            {"type": "call_task.completed", "timestamp": _iso(self.clock.now()), "data": data}
        )
        webhook_id = _hook_id(compact([task["task_id"], outcome, final]))
        stamp = int(wall_time())
        if forge == "stale":
            stamp -= 360
        headers = {"Content-Type": "application/json", **self._signer.sign(webhook_id, body, stamp)}
        if forge == "bad_signature":
            headers["webhook-signature"] = "v1,AAAA" + headers["webhook-signature"][7:]
        elif forge == "whsec_key":
            wrong = StandardWebhooks([self.secret.encode("ascii")])
            headers.update(wrong.sign(webhook_id, body, stamp))
        elif forge == "tampered":
            body = body.replace(b'"outcome":"' + outcome.encode(), b'"outcome":"answered"', 1)
            if outcome == "answered":
                body = body.replace(b'"final":true', b'"final":false', 1)
        url = task.get("callback_url") or self.webhook_url
        hook = Webhook(
            outcome if forge is None else f"forged:{forge}",
            url,
            body,
            headers,
            self.clock.now(),
            task["task_id"],
        )
        self.webhooks.append(hook)
        return hook

    def _event(
        self, name: str, address: str, data: Mapping[str, Any]
    ) -> list[tuple[str, bytes, str | None]]:
        raise NotImplementedError  # event() is overridden: callbacks carry their own headers

    async def event(self, name: str, address: str, **data: Any) -> list[Webhook]:
        """An operator's report on the last task for `address` (`final=True` by default),
        or a forged one (`event("forged", phone, how="stale", outcome="answered")`)."""
        if name not in self.events:
            raise ValueError(f"unknown event {name!r}; known: {', '.join(self.events)}")
        last = next(iter(reversed(self.sent_to(address))), None)
        task: Mapping[str, Any] = {"task_id": data["task_id"]} if "task_id" in data else {}
        if last is not None and not task:
            task = last.data
        if not task:
            raise ValueError(f"no call task for {address} (give task_id to name one)")
        if name == "forged":
            how = str(data.get("how", "bad_signature"))
            if how not in FORGERIES:
                raise ValueError(f"unknown forgery {how!r}; known: {', '.join(FORGERIES)}")
            hook = self._callback(task, str(data.get("outcome", "answered")), True, forge=how)
        else:
            hook = self._callback(task, name, bool(data.get("final", True)))
        if not await self._attempt(hook) and name != "forged":
            self._spawn(self._retry(hook))
        return [hook]


def _plan(entry: Entry) -> list[tuple[float, str, bool]]:
    """`(delay, outcome, final)` of the callbacks a script entry makes."""
    first = entry.delays.get("sent", RECEIPT_DELAYS["delivered"])
    later = entry.delays.get("delivered", entry.delays.get("read", RECEIPT_DELAYS["read"]))
    if entry.do == "deliver":
        return [(entry.delays.get("delivered", RECEIPT_DELAYS["delivered"]), "answered", True)]
    if entry.do == "read":
        return [(first, "no_answer", False), (max(later, first), "answered", True)]
    if entry.do == "fail_receipt":
        outcome = "wrong_number" if entry.detail == "wrong_number" else "no_answer"
        return [(entry.delays.get("failed", RECEIPT_DELAYS["failed"]), outcome, True)]
    if entry.do == "duplicate_receipts":
        at = entry.delays.get("delivered", RECEIPT_DELAYS["delivered"])
        return [(at, "answered", True), (at + 0.5, "answered", True)]
    if entry.do == "out_of_order":
        at = entry.delays.get("delivered", RECEIPT_DELAYS["delivered"])
        return [(at, "answered", True), (at + 0.5, "no_answer", False)]
    return []


def _hook_id(content: bytes) -> str:
    return "msg_" + hashlib.sha256(content).hexdigest()[:24]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).isoformat().replace("+00:00", "Z")


__all__ = ["ERRORS", "FORGERIES", "TEST_SECRET", "CallCentreEmulator"]
