"""SMSC.ru on loopback (providers.md section 6).

`/sys/send.php` and `/sys/status.php` (GET or POST, `fmt=3` JSON), always HTTP 200, with
SMSC's error envelope `{"error": …, "error_code": N}` (plus `id` for codes 3, 6, 7 and 8).
A send answers `{"id", "cnt"}`, and with `cost=2` or `3` the price (`price` per SMS) and
the balance.

Receipts are learned by polling, as the provider does: `status.php` answers each message's
latest `status` (0 sent, 1 delivered, a `fail_receipt` entry's `code` or 20 for a failure,
with `err`), on the emulator's clock after the script's delays. One message is answered as
one object; several (comma lists of `id` and `phone`) as a list of objects naming their
`id` and `phone` (the list form is our reading: unconfirmed). No callback is posted, since
SMSC's callback format is unconfirmed (section 6.5): `webhooks` records each status
change, sent nowhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, NamedTuple

from aiohttp import web

from cascade_notify.clock import Clock
from cascade_notify.providers._signing import same
from cascade_notify.testing.emulators._base import (
    Accepted,
    Emulator,
    Handler,
    RecordedRequest,
    Webhook,
    json_answer,
)
from cascade_notify.testing.emulators._records import compact
from cascade_notify.testing.emulators._script import Entry
from cascade_notify.testing.emulators.twilio import _segments

DEFAULT_FAILURE: Final = 20
_WITH_ID: Final = frozenset({3, 6, 7, 8})


class SmscError(NamedTuple):
    code: int
    text: str


#: Named errors scripts may use: SMSC's `error_code`s (section 6.1).
ERRORS: Final[Mapping[str, SmscError]] = {
    "bad_params": SmscError(1, "parameters error"),
    "bad_token": SmscError(2, "authorise error"),
    "no_money": SmscError(3, "no money"),
    "ip_blocked": SmscError(4, "IP is blocked"),
    "bad_date": SmscError(5, "invalid date format"),
    "forbidden": SmscError(6, "message is denied"),
    "invalid_number": SmscError(7, "invalid number"),
    "undeliverable": SmscError(8, "cannot deliver the message"),
    "duplicate": SmscError(9, "duplicate request, wait a minute"),
    # not SMSC's: an HTTP 503 from a proxy in front of it
    "http_503": SmscError(503, "Service Unavailable"),
    # what emulators.md calls the usual names
    "blocked": SmscError(8, "cannot deliver the message"),
    "not_a_user": SmscError(8, "cannot deliver the message"),
    "rate_limited": SmscError(9, "duplicate request, wait a minute"),
}


class SmscEmulator(Emulator):
    """SMSC's `send.php` and `status.php`; receipts are its messages' statuses, polled."""

    name: ClassVar[str] = "smsc"
    errors: ClassVar[Mapping[str, Any]] = ERRORS
    receipts: ClassVar[Mapping[str, str]] = {"sent": "0", "delivered": "1", "failed": "failed"}

    def __init__(
        self,
        *,
        login: str = "emulator",
        password: str = "emulator-password",
        price: float = 1.9,
        balance: float = 1234.56,
        webhook_url: str | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        super().__init__(webhook_url=webhook_url, clock=clock, **options)
        self.login = login
        self.password = password
        self.price = price
        self.balance = balance
        #: message id -> (status, err, when it changed)
        self._status: dict[str, tuple[int, int, float]] = {}
        #: Named errors the next status calls answer, one per call (a poll that fails).
        self.status_errors: list[str] = []

    def settings(self) -> dict[str, Any]:
        return {
            "type": "smsc",
            "login": self.login,
            "password": self.password,
            "api_url": self.api_url,
        }

    def normalize(self, address: str) -> str:
        return re.sub(r"[^0-9]", "", address) or address

    def _routes(self) -> list[tuple[str, str, Handler]]:
        return [
            (method, path, handler)
            for path, handler in (
                ("/sys/send.php", self._send_sms),
                ("/sys/status.php", self._status_of),
            )
            for method in ("GET", "POST")
        ]

    def _not_found(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="Not Found")

    def _reset_state(self) -> None:
        self._status.clear()
        self.status_errors.clear()

    def _sign(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/x-www-form-urlencoded"}

    def _webhook(self, kind: str, body: bytes, message_id: str | None = None) -> Webhook:
        hook = super()._webhook(kind, body, message_id)
        hook.url = None  # the callback's format is unconfirmed: statuses are polled
        return hook

    # -- the API ------------------------------------------------------------------

    def _fields(self, request: web.Request, record: RecordedRequest) -> dict[str, str]:
        form = record.parsed if isinstance(record.parsed, dict) else {}
        fields = {**request.query, **form}
        record.parsed = fields
        return fields

    def _authorized(self, fields: Mapping[str, str]) -> bool:
        return same(fields.get("login", ""), self.login) and same(
            fields.get("psw", ""), self.password
        )

    async def _send_sms(self, request: web.Request) -> web.StreamResponse:
        record = self.record_of(request)
        fields = self._fields(request, record)
        if not self._authorized(fields):
            return _refuse(ERRORS["bad_token"])
        phones = [p for p in re.split(r"[,;]", fields.get("phones", "")) if p]
        text = fields.get("mes", "")
        if not phones or not text:
            return _refuse(ERRORS["bad_params"])
        address = self.normalize(phones[0])
        if not address.isdigit() or not 7 <= len(address) <= 15:
            record.address, record.entry = address, "invalid_number"
            return _refuse(ERRORS["invalid_number"], self.new_id())
        wants_cost = fields.get("cost") in ("2", "3")

        def accept() -> Accepted:
            number = self.new_id()
            cnt = _segments(text)
            self._status[str(number)] = (-1, 0, self.clock.now())
            return Accepted(str(number), address, text, record, {"cnt": cnt})

        def answer(message: Accepted, entry: Entry) -> web.StreamResponse:
            cnt = message.data["cnt"]
            out: dict[str, Any] = {"id": int(message.id), "cnt": cnt}
            if wants_cost:
                cost = self.price * cnt
                self.balance = round(self.balance - cost, 2)
                out["cost"] = f"{cost:.2f}"
                if fields.get("cost") == "3":
                    out["balance"] = f"{self.balance:.2f}"
            return json_answer(out)

        return await self._send(request, address, accept, answer)

    def _error(self, entry: Entry, address: str) -> web.StreamResponse:
        error: SmscError = ERRORS[entry.do]
        if error.code == 503:
            return web.Response(status=503, text="Service Unavailable")
        return _refuse(error, self.new_id())

    async def _status_of(self, request: web.Request) -> web.StreamResponse:
        record = self.record_of(request)
        fields = self._fields(request, record)
        if not self._authorized(fields):
            return _refuse(ERRORS["bad_token"])
        if self.status_errors:
            error: SmscError = ERRORS[self.status_errors.pop(0)]
            if error.code == 503:
                return web.Response(status=503, text="Service Unavailable")
            return _refuse(error)
        ids = [i for i in fields.get("id", "").split(",") if i]
        phones = [self.normalize(p) for p in fields.get("phone", "").split(",") if p]
        if not ids or len(ids) != len(phones):
            return _refuse(ERRORS["bad_params"])
        entries = []
        for sms_id, phone in zip(ids, phones, strict=True):
            message = next((m for m in self.outbox if m.id == sms_id), None)
            if message is None or message.address != phone:
                entries.append({"status": -3, "err": 0, "id": sms_id, "phone": phone})
                continue
            status, err, when = self._status.get(sms_id, (-1, 0, self.clock.now()))
            entries.append(
                {
                    "status": status,
                    "last_date": datetime.fromtimestamp(when, UTC).strftime("%d.%m.%Y %H:%M:%S"),
                    "last_timestamp": int(when),
                    "err": err,
                    "id": sms_id,
                    "phone": phone,
                }
            )
        if len(entries) == 1:
            single = {k: v for k, v in entries[0].items() if k not in ("id", "phone")}
            return json_answer(single)
        return json_answer(entries)

    def _receipt(self, message: Accepted, status: str, entry: Entry) -> bytes:
        if status == "failed":
            code, err = entry.code or DEFAULT_FAILURE, 1
        else:
            code, err = int(status), 0
        self._status[message.id] = (code, err, self.clock.now())
        return compact({"id": message.id, "phone": message.address, "status": code, "err": err})


def _refuse(error: SmscError, message_id: int | None = None) -> web.Response:
    body: dict[str, Any] = {"error": error.text, "error_code": error.code}
    if error.code in _WITH_ID and message_id is not None:
        body["id"] = message_id
    return json_answer(body)


__all__ = ["ERRORS", "SmscEmulator", "SmscError"]
