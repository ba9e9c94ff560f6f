"""The Bitrix24 REST API on loopback, as an inbound webhook sees it (providers.md §10.2.8).

`POST /rest/{user_id}/{code}/{method}` (with or without `.json`), JSON bodies; every answer
carries `time`; a wrong `{user_id}/{code}` is 401 `NO_AUTH_FOUND`. Methods:
`crm.duplicate.findbycomm` (`[]` when nothing matches), `crm.item.add` (leads),
`crm.activity.todo.add`, `crm.activity.get`, `crm.activity.list` (filters `@ID`,
`OWNER_TYPE_ID`, `OWNER_ID`, `%DESCRIPTION`), `crm.activity.delete`.

Customers are added with `add_contact(phone)`. Scripts per phone answer the to-do's
creation: `deliver` (created), `rate_limited` (503 `QUERY_LIMIT_EXCEEDED`), `server_error`
(500), `created_then_500` (created, then 500: for the search before a retry),
`owner_gone` (400 `OWNER_NOT_FOUND`), plus `slow` and `hang_up`. An operator completes a
to-do with `event("complete", phone)` (or `complete(activity_id)`): it is marked done and
the form-encoded `ONCRMACTIVITYUPDATE` is posted once, never retried;
`drop_events = True` loses every event, so polling is what finds it.
"""

from __future__ import annotations

import itertools
import time as _time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final
from urllib.parse import urlencode

from aiohttp import web

from cascade_notify.clock import Clock
from cascade_notify.testing.emulators._base import (
    Accepted,
    Emulator,
    Handler,
    Webhook,
    json_answer,
)
from cascade_notify.testing.emulators._script import Entry

ERRORS: Final[Mapping[str, tuple[int, str, str]]] = {
    "rate_limited": (503, "QUERY_LIMIT_EXCEEDED", "Too many requests"),
    "server_error": (500, "INTERNAL_SERVER_ERROR", "Internal server error"),
    "created_then_500": (500, "INTERNAL_SERVER_ERROR", "Internal server error"),
    "owner_gone": (400, "OWNER_NOT_FOUND", "Owner not found"),
    "bad_token": (401, "NO_AUTH_FOUND", "Wrong authorization data"),
}
PORTAL: Final = "acme.bitrix24.ru"


def _digits(phone: str) -> str:
    digits = "".join(c for c in phone if c.isdigit())
    return "7" + digits[1:] if len(digits) == 11 and digits.startswith("8") else digits


class Bitrix24Emulator(Emulator):
    """One Bitrix24 portal behind an inbound webhook `/rest/{user_id}/{code}/`."""

    name: ClassVar[str] = "bitrix24"
    errors: ClassVar[Mapping[str, Any]] = ERRORS
    events: ClassVar[tuple[str, ...]] = ("complete",)

    def __init__(
        self,
        *,
        user_id: int = 1,
        code: str = "x7k2emulator",
        application_token: str = "jvh9emulator",
        responsible_id: int = 42,
        webhook_url: str | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        super().__init__(webhook_url=webhook_url, clock=clock, **options)
        self.user_id, self.code = user_id, code
        self.application_token = application_token
        self.responsible_id = responsible_id
        self.drop_events = False
        self._creating: Callable[[], Accepted] | None = None
        self._numbers = itertools.count(1187)
        self._activities = itertools.count(5531)
        #: Contacts and leads by id: {"type": 3 or 1, "phone": ...}.
        self.people: dict[int, dict[str, Any]] = {}
        #: Activities by id, as `crm.activity.get` answers them (strings), plus `deleted`.
        self.activities: dict[int, dict[str, Any]] = {}

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "bitrix24_call_task",
            "webhook_url": f"{self.api_url}/rest/{self.user_id}/{self.code}/",
            "responsible_id": self.responsible_id,
            "application_token": self.application_token,
        }
        return out

    def normalize(self, address: str) -> str:
        return "+" + _digits(address)

    def _routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/rest/{user}/{code}/{method}", self._method)]

    def _reset_state(self) -> None:
        self.people.clear()
        self.activities.clear()

    def _sign(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/x-www-form-urlencoded"}

    # -- control --------------------------------------------------------------

    def add_contact(self, phone: str, *, lead: bool = False) -> int:
        """A contact (or lead) with this phone; its id."""
        number = next(self._numbers)
        self.people[number] = {"type": 1 if lead else 3, "phone": phone}
        return number

    async def complete(self, activity_id: int, *, status: str = "2") -> Webhook:
        """Mark a to-do done and post its event once (never retried)."""
        row = self.activities[activity_id]
        row.update(COMPLETED="Y", STATUS=status, LAST_UPDATED=self._date())
        fields = {
            "event": "ONCRMACTIVITYUPDATE",
            "event_handler_id": "975",
            "data[FIELDS][ID]": str(activity_id),
            "ts": str(int(self.clock.now())),
            "auth[domain]": PORTAL,
            "auth[client_endpoint]": f"https://{PORTAL}/rest/",
            "auth[member_id]": "d897063e1ce7c5eb9f04b9751eef0000",
            "auth[application_token]": self.application_token,
        }
        hook = self._webhook("ONCRMACTIVITYUPDATE", urlencode(fields).encode(), str(activity_id))
        if self.drop_events:
            hook.url = None
        await self._attempt(hook)
        return hook

    async def event(self, name: str, address: str, **data: Any) -> list[Webhook]:
        """`complete`: the last open to-do for `address` is done (`status="3"`: by a rule)."""
        if name not in self.events:
            raise ValueError(f"unknown event {name!r}; known: {', '.join(self.events)}")
        phone = self.normalize(address)
        open_ = [
            i
            for i, row in self.activities.items()
            if row["_phone"] == phone and row["COMPLETED"] == "N" and not row["_deleted"]
        ]
        if not open_ and data.get("create"):  # an operator's own to-do, ticked at once
            owner = self.add_contact(phone)
            number = next(self._activities)
            self.activities[number] = self._row(number, 3, owner, phone, {"deadline": ""})
            open_ = [number]
        if not open_:
            raise ValueError(f"no open to-do for {address}")
        return [await self.complete(open_[-1], status=str(data.get("status", "2")))]

    # -- the API --------------------------------------------------------------

    def _date(self) -> str:
        return _time.strftime("%Y-%m-%dT%H:%M:%S+03:00", _time.gmtime(self.clock.now() + 10800))

    def _answer(self, result: Any, status: int = 200) -> web.Response:
        now = self.clock.now()
        timing = {"start": now, "finish": now, "duration": 0.0, "processing": 0.0, "operating": 0}
        return json_answer({"result": result, "time": timing}, status=status)

    def _error(self, entry: Entry, address: str) -> web.StreamResponse:
        if entry.do == "created_then_500" and self._creating is not None:
            self.outbox.append(self._creating())  # it exists, though the answer says 500
        return _fail(entry.do)

    async def _method(self, request: web.Request) -> web.StreamResponse:
        if (
            request.match_info["user"] != str(self.user_id)
            or request.match_info["code"] != self.code
        ):
            return _fail("bad_token")
        method = request.match_info["method"].removesuffix(".json")
        record = self.record_of(request)
        params = record.parsed if isinstance(record.parsed, dict) else {}
        handler = {
            "crm.duplicate.findbycomm": self._m_find,
            "crm.item.add": self._m_item_add,
            "crm.activity.todo.add": self._m_todo_add,
            "crm.activity.get": self._m_get,
            "crm.activity.list": self._m_list,
            "crm.activity.delete": self._m_delete,
        }.get(method)
        if handler is None:
            return json_answer(
                {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found"},
                status=404,
            )
        return await handler(request, params)

    async def _m_find(self, request: web.Request, params: dict[str, Any]) -> web.StreamResponse:
        values = params.get("values") or []
        wanted = {_digits(str(v)) for v in values}
        kinds = {3: "CONTACT", 1: "LEAD"}
        found: dict[str, list[int]] = {}
        for number, person in self.people.items():
            if _digits(person["phone"]) in wanted:
                kind = kinds[person["type"]]
                if params.get("entity_type") in (None, kind):
                    found.setdefault(kind, []).append(number)
        return self._answer(found or [])

    async def _m_item_add(self, request: web.Request, params: dict[str, Any]) -> web.StreamResponse:
        fields = params.get("fields") or {}
        phones = [f.get("value") for f in fields.get("fm", []) if f.get("typeId") == "PHONE"]
        if params.get("entityTypeId") != 1 or not phones:
            return json_answer({"error": "100", "error_description": "bad fields"}, status=400)
        number = self.add_contact(str(phones[0]), lead=True)
        return self._answer({"item": {"id": number, "title": fields.get("title")}})

    async def _m_todo_add(self, request: web.Request, params: dict[str, Any]) -> web.StreamResponse:
        owner = self.people.get(int(params.get("ownerId") or 0))
        missing = [k for k in ("ownerTypeId", "ownerId", "deadline") if not params.get(k)]
        if missing:
            return json_answer(
                {"error": "100", "error_description": f"{missing[0]} is required"}, status=400
            )
        if owner is None or owner["type"] != params.get("ownerTypeId"):
            return _fail("owner_gone")
        record = self.record_of(request)
        phone = self.normalize(owner["phone"])

        def accept() -> Accepted:
            number = next(self._activities)
            self.activities[number] = self._row(
                number, params["ownerTypeId"], params["ownerId"], phone, params
            )
            return Accepted(str(number), phone, params.get("description"), record)

        def answer(message: Accepted, entry: Entry) -> web.StreamResponse:
            return self._answer({"id": int(message.id)})

        self._creating = accept
        try:
            return await self._send(request, phone, accept, answer)
        finally:
            self._creating = None

    def _row(
        self, number: int, owner_type: int, owner: int, phone: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "ID": str(number), "OWNER_TYPE_ID": str(owner_type), "OWNER_ID": str(owner),
            "PROVIDER_ID": "CRM_TODO", "COMPLETED": "N", "STATUS": "1",
            "RESPONSIBLE_ID": str(params.get("responsibleId", self.responsible_id)),
            "DEADLINE": params.get("deadline", ""), "SUBJECT": params.get("title", ""),
            "DESCRIPTION": params.get("description", ""), "LAST_UPDATED": self._date(),
            "_phone": phone, "_deleted": False,
        }  # fmt: skip

    def _public(self, row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if not k.startswith("_")}

    async def _m_get(self, request: web.Request, params: dict[str, Any]) -> web.StreamResponse:
        row = self.activities.get(int(params.get("id") or 0))
        if row is None or row["_deleted"]:
            return json_answer({"error": "NOT_FOUND", "error_description": "Not found"}, status=400)
        return self._answer(self._public(row))

    async def _m_list(self, request: web.Request, params: dict[str, Any]) -> web.StreamResponse:
        rules = params.get("filter") or {}
        rows = [r for r in self.activities.values() if not r["_deleted"]]
        if "@ID" in rules:
            ids = {str(i) for i in rules["@ID"]}
            rows = [r for r in rows if r["ID"] in ids]
        for key in ("OWNER_TYPE_ID", "OWNER_ID", "PROVIDER_ID"):
            if key in rules:
                rows = [r for r in rows if r[key] == str(rules[key])]
        if "%DESCRIPTION" in rules:
            rows = [r for r in rows if str(rules["%DESCRIPTION"]) in r["DESCRIPTION"]]
        select = params.get("select")
        out = [
            {k: v for k, v in self._public(r).items() if not select or k in select} for r in rows
        ]
        return json_answer({"result": out[:50], "total": len(out), "time": {"operating": 0}})

    async def _m_delete(self, request: web.Request, params: dict[str, Any]) -> web.StreamResponse:
        row = self.activities.get(int(params.get("id") or 0))
        if row is None or row["_deleted"]:
            return json_answer({"error": "NOT_FOUND", "error_description": "Not found"}, status=400)
        row["_deleted"] = True
        return self._answer(True)


def _fail(name: str) -> web.Response:
    status, code, text = ERRORS[name]
    return json_answer({"error": code, "error_description": text}, status=status)


__all__ = ["ERRORS", "Bitrix24Emulator"]
