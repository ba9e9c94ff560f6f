"""The amoCRM / Kommo API v4 on loopback (providers.md §10.3.7).

`GET|POST /api/v4/contacts` (`query` → 200 or 204), `GET|POST /api/v4/tasks` (an array in,
`_embedded.tasks[]` with `request_id` echoed; filters `id[]`, `entity_type`, `entity_id`,
`is_completed`; 204 when empty) and `GET|PATCH /api/v4/tasks/{id}`. `Authorization:
Bearer` is checked exactly (401 problem JSON otherwise); a task without `complete_till` or
with an unknown `task_type_id` is 400 with `validation-errors`.

Scripts per phone answer the task's creation: `deliver`, `rate_limited` (429),
`payment_required` (402), `forbidden` (403), `server_error` (500), `slow`, `hang_up`.
An operator completes the last open task with `event("complete", phone, text=...)`: the
form-encoded `task[update][0][...]` body goes, unsigned, to `webhook_url` (`twice=True`:
sent twice; `drop_events = True`: never).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, ClassVar, Final
from urllib.parse import urlencode

from aiohttp import web

from cascade_notify.clock import Clock
from cascade_notify.providers._signing import same
from cascade_notify.testing.emulators._base import (
    Accepted,
    Emulator,
    Handler,
    Webhook,
    compact,
    json_answer,
)
from cascade_notify.testing.emulators._script import Entry

ERRORS: Final[Mapping[str, tuple[int, str]]] = {
    "rate_limited": (429, "Too Many Requests"),
    "payment_required": (402, "Payment Required"),
    "forbidden": (403, "Forbidden"),
    "server_error": (500, "Internal Server Error"),
}
SUBDOMAIN: Final = "acme"
ACCOUNT_ID: Final = 28800001


def _digits(phone: str) -> str:
    digits = "".join(c for c in phone if c.isdigit())
    return "7" + digits[1:] if len(digits) == 11 and digits.startswith("8") else digits


def _problem(status: int, title: str, **extra: Any) -> web.Response:
    body = {"title": title, "type": f"https://httpstatus.es/{status}", "status": status, **extra}
    return web.Response(body=compact(body), status=status, content_type="application/problem+json")


class AmoCrmEmulator(Emulator):
    """One amoCRM account with a long-lived token."""

    name: ClassVar[str] = "amocrm"
    errors: ClassVar[Mapping[str, Any]] = ERRORS
    events: ClassVar[tuple[str, ...]] = ("complete",)

    def __init__(
        self,
        *,
        access_token: str = "eyJ0eXAiemulator",
        responsible_user_id: int = 7001,
        webhook_secret: str = "k3y-of-the-emulator-webhook-0001",
        webhook_url: str | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        super().__init__(webhook_url=webhook_url, clock=clock, **options)
        self.access_token = access_token
        self.responsible_user_id = responsible_user_id
        self.webhook_secret = webhook_secret
        self.drop_events = False
        self._contact_ids = itertools.count(31337)
        self._task_ids = itertools.count(90211)
        #: Contacts by id: {"id", "name", "custom_fields_values"}.
        self.contacts: dict[int, dict[str, Any]] = {}
        #: Tasks by id, as `GET /api/v4/tasks/{id}` answers them.
        self.tasks: dict[int, dict[str, Any]] = {}

    def settings(self) -> dict[str, Any]:
        return {
            "type": "amocrm_call_task",
            "api_url": self.api_url,
            "access_token": self.access_token,
            "responsible_user_id": self.responsible_user_id,
            "webhook_secret": self.webhook_secret,
        }

    def normalize(self, address: str) -> str:
        return "+" + _digits(address)

    def _routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/api/v4/contacts", self._contacts_get),
            ("POST", "/api/v4/contacts", self._contacts_post),
            ("GET", "/api/v4/tasks", self._tasks_get),
            ("POST", "/api/v4/tasks", self._tasks_post),
            ("GET", "/api/v4/tasks/{id}", self._task_get),
            ("PATCH", "/api/v4/tasks/{id}", self._task_patch),
        ]

    def _reset_state(self) -> None:
        self.contacts.clear()
        self.tasks.clear()

    def _sign(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/x-www-form-urlencoded"}  # amoCRM signs nothing

    # -- control --------------------------------------------------------------

    def add_contact(self, phone: str, name: str = "Anna Petrova") -> int:
        number = next(self._contact_ids)
        self.contacts[number] = {
            "id": number, "name": name, "responsible_user_id": self.responsible_user_id,
            "custom_fields_values": [{"field_code": "PHONE", "values": [{"value": phone}]}],
        }  # fmt: skip
        return number

    def _phone_of(self, contact: int) -> str:
        fields = self.contacts.get(contact, {}).get("custom_fields_values", [])
        for field in fields:
            if field.get("field_code") == "PHONE" and field.get("values"):
                return self.normalize(str(field["values"][0]["value"]))
        return ""

    async def event(self, name: str, address: str, **data: Any) -> list[Webhook]:
        """`complete`: the last open task for `address` is done, with `text` as its result."""
        if name not in self.events:
            raise ValueError(f"unknown event {name!r}; known: {', '.join(self.events)}")
        phone = self.normalize(address)
        open_ = [
            i for i, t in self.tasks.items()
            if not t["is_completed"] and self._phone_of(t["entity_id"]) == phone
        ]  # fmt: skip
        if not open_ and data.get("create"):
            contact = self.add_contact(phone)
            open_ = [self._new_task({"entity_id": contact, "text": "by hand"})]
        if not open_:
            raise ValueError(f"no open task for {address}")
        task = self.tasks[open_[-1]]
        task.update(
            is_completed=True,
            result={"text": str(data.get("text", "Reached her"))},
            updated_at=int(self.clock.now()),
        )
        body = urlencode(
            {
                "task[update][0][id]": str(task["id"]),
                "task[update][0][element_id]": str(task["entity_id"]),
                "task[update][0][element_type]": "1",
                "task[update][0][task_type]": "1",
                "task[update][0][status]": "1",
                "task[update][0][text]": task["text"],
                "account[id]": str(ACCOUNT_ID),
                "account[subdomain]": SUBDOMAIN,
            }
        ).encode()
        hooks = [self._webhook("update_task", body, str(task["id"]))]
        if data.get("twice"):
            hooks.append(self._webhook("update_task", body, str(task["id"])))
        for hook in hooks:
            if self.drop_events:
                hook.url = None
            await self._attempt(hook)
        return hooks

    # -- the API --------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        return same(given, f"Bearer {self.access_token}")

    def _error(self, entry: Entry, address: str) -> web.StreamResponse:
        status, title = ERRORS[entry.do]
        return _problem(status, title, detail=entry.detail or title)

    async def _contacts_get(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _problem(401, "Unauthorized", detail="Invalid access token")
        wanted = _digits(request.query.get("query", ""))
        found = [
            c for c in self.contacts.values()
            if wanted and any(wanted in _digits(str(v["value"]))
                              for f in c["custom_fields_values"] for v in f["values"])
        ]  # fmt: skip
        if not found:
            return web.Response(status=204)
        return json_answer(
            {"_embedded": {"contacts": found[: int(request.query.get("limit", 50))]}}
        )

    async def _contacts_post(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _problem(401, "Unauthorized", detail="Invalid access token")
        items = self.record_of(request).parsed
        if not isinstance(items, list) or not items:
            return _problem(400, "Bad Request", detail="the body must be an array")
        made = []
        for item in items:
            values = item.get("custom_fields_values") or []
            phone = next((v["value"] for f in values for v in f.get("values", [])), "")
            number = self.add_contact(str(phone), str(item.get("name", "")))
            made.append({"id": number, "request_id": item.get("request_id")})
        return json_answer({"_embedded": {"contacts": made}})

    def _new_task(self, item: Mapping[str, Any]) -> int:
        number = next(self._task_ids)
        self.tasks[number] = {
            "id": number, "task_type_id": item.get("task_type_id", 1),
            "text": item.get("text", ""), "complete_till": item.get("complete_till", 0),
            "entity_type": item.get("entity_type", "contacts"),
            "entity_id": item.get("entity_id"),
            "responsible_user_id": item.get("responsible_user_id", self.responsible_user_id),
            "is_completed": False, "result": [], "updated_at": int(self.clock.now()),
            "account_id": ACCOUNT_ID,
        }  # fmt: skip
        return number

    async def _tasks_post(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _problem(401, "Unauthorized", detail="Invalid access token")
        items = self.record_of(request).parsed
        if not isinstance(items, list) or len(items) != 1:
            return _problem(400, "Bad Request", detail="one task per request, as an array")
        item = items[0]
        errors = []
        if item.get("task_type_id") not in (1, 2):
            errors.append({"code": "NotSupportedChoice", "path": "task_type_id"})
        if not isinstance(item.get("complete_till"), int):
            errors.append({"code": "NotBlank", "path": "complete_till"})
        if not item.get("text"):
            errors.append({"code": "NotBlank", "path": "text"})
        if errors:
            return _problem(
                400, "Bad Request", detail="Request validation failed",
                **{"validation-errors": [{"request_id": item.get("request_id"), "errors": errors}]},
            )  # fmt: skip
        record = self.record_of(request)
        phone = self._phone_of(int(item.get("entity_id") or 0))

        def accept() -> Accepted:
            return Accepted(str(self._new_task(item)), phone, item["text"], record)

        def answer(message: Accepted, entry: Entry) -> web.StreamResponse:
            task = {"id": int(message.id), "request_id": item.get("request_id")}
            return json_answer({"_embedded": {"tasks": [task]}})

        return await self._send(request, phone, accept, answer)

    async def _tasks_get(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _problem(401, "Unauthorized", detail="Invalid access token")
        query = request.query
        rows = list(self.tasks.values())
        ids = {int(i) for i in query.getall("filter[id][]", []) if i.isdigit()}
        if ids:
            rows = [t for t in rows if t["id"] in ids]
        if "filter[entity_id]" in query:
            rows = [t for t in rows if str(t["entity_id"]) == query["filter[entity_id]"]]
        if "filter[is_completed]" in query:
            done = query["filter[is_completed]"] == "1"
            rows = [t for t in rows if t["is_completed"] is done]
        if not rows:
            return web.Response(status=204)
        return json_answer({"_embedded": {"tasks": rows[:250]}})

    async def _task_get(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _problem(401, "Unauthorized", detail="Invalid access token")
        task = self.tasks.get(int(request.match_info["id"]))
        return web.Response(status=204) if task is None else json_answer(task)

    async def _task_patch(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _problem(401, "Unauthorized", detail="Invalid access token")
        task = self.tasks.get(int(request.match_info["id"]))
        if task is None:
            return _problem(404, "Not Found", detail="no such task")
        change = self.record_of(request).parsed
        if not isinstance(change, dict):
            return _problem(400, "Bad Request", detail="the body must be an object")
        task.update({k: v for k, v in change.items() if k in ("is_completed", "result", "text")})
        task["updated_at"] = int(self.clock.now())
        return json_answer({"id": task["id"], "updated_at": task["updated_at"]})


__all__ = ["ERRORS", "AmoCrmEmulator"]
