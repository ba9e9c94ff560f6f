"""SMS.ru on loopback (providers.md section 5).

`/sms/send` and `/sms/status` (GET or POST, `json=1`), always HTTP 200 with the outcome in
`status_code`: once for the request (a wrong `api_id` is 200), once per number, keyed by
the number's digits. A text of more than 8 SMS is refused with 205, as SMS.ru does.

Delivery callbacks go to `webhook_url` as a form: `data[0]` is
`sms_status\\n<sms_id>\\n<code>\\n<unix time>` and `hash` the hex SHA-256 of the `api_id`
followed by the `data[]` elements. The receiver must answer the body `100`; anything else
is a failed callback, sent again after `retry_delays`. `sms/status` answers each id's
latest code (a `fail_receipt` entry's `code` picks the failure, default 104), and the
`price` per SMS the emulator bills.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final, NamedTuple
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from cascade_notify.clock import Clock
from cascade_notify.providers._signing import same, sha256_hex
from cascade_notify.testing.emulators._base import (
    Accepted,
    Emulator,
    Handler,
    RecordedRequest,
    Webhook,
    json_answer,
)
from cascade_notify.testing.emulators._records import Attempt
from cascade_notify.testing.emulators._script import Entry
from cascade_notify.testing.emulators.twilio import _segments

MAX_SEGMENTS: Final = 8
DEFAULT_FAILURE: Final = 104


class SmsRuError(NamedTuple):
    code: int
    text: str
    #: True: the whole request is refused; False: only this number.
    request: bool = False


#: Named errors scripts may use: SMS.ru's codes (section 5.3).
ERRORS: Final[Mapping[str, SmsRuError]] = {
    "bad_token": SmsRuError(200, "Неправильный api_id", request=True),
    "no_money": SmsRuError(201, "Не хватает средств на лицевом счету", request=True),
    "invalid_number": SmsRuError(202, "Неправильно указан номер телефона получателя"),
    "sender_not_approved": SmsRuError(204, "Имя отправителя не согласовано", request=True),
    "too_long": SmsRuError(205, "Сообщение слишком длинное (превышает 8 СМС)"),
    "daily_limit": SmsRuError(206, "Будет превышен дневной лимит на отправку сообщений"),
    "no_route": SmsRuError(207, "На этот номер нет маршрута для доставки сообщений"),
    "stop_list": SmsRuError(209, "Номер телефона находится в стоп-листе"),
    "unavailable": SmsRuError(220, "Сервис временно недоступен"),
    "number_daily_limit": SmsRuError(230, "Превышен общий лимит сообщений на этот номер в день"),
    "duplicate_minute": SmsRuError(231, "Превышен лимит одинаковых сообщений в минуту"),
    "duplicate_day": SmsRuError(232, "Превышен лимит одинаковых сообщений в день"),
    "code_too_often": SmsRuError(233, "Превышен лимит сообщений с кодом на этот номер"),
    "expired_token": SmsRuError(300, "Неправильный token", request=True),
    "bad_login": SmsRuError(301, "Неправильный api_id, либо логин/пароль", request=True),
    "not_confirmed": SmsRuError(302, "Аккаунт не подтвержден", request=True),
    "server_error": SmsRuError(500, "Ошибка на сервере. Повторите запрос.", request=True),
    # not SMS.ru's: an HTTP 503 from a proxy in front of it
    "http_503": SmsRuError(503, "Service Unavailable", request=True),
    # what emulators.md calls the usual names
    "blocked": SmsRuError(209, "Номер телефона находится в стоп-листе"),
    "not_a_user": SmsRuError(202, "Неправильно указан номер телефона получателя"),
    "rate_limited": SmsRuError(231, "Превышен лимит одинаковых сообщений в минуту"),
}
_TEXTS: Final = {
    -1: "Сообщение не найдено",
    100: "Сообщение находится в нашей очереди",
    102: "Сообщение отправлено (в пути)",
    103: "Сообщение доставлено",
    104: "Не может быть доставлено: время жизни истекло",
    105: "Не может быть доставлено: удалено оператором",
    106: "Не может быть доставлено: сбой в телефоне",
    107: "Не может быть доставлено: неизвестная причина",
    108: "Не может быть доставлено: отклонено",
    150: "Не может быть доставлено: не найден маршрут на данный номер",
}


class SmsRuEmulator(Emulator):
    """SMS.ru's `sms/send` and `sms/status`, and its signed delivery callbacks."""

    name: ClassVar[str] = "smsru"
    errors: ClassVar[Mapping[str, Any]] = ERRORS
    receipts: ClassVar[Mapping[str, str]] = {"sent": "102", "delivered": "103", "failed": "failed"}

    def __init__(
        self,
        *,
        api_id: str = "EMULATOR-API-ID-0000",
        price: float = 0.5,
        balance: float = 4122.56,
        webhook_url: str | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        super().__init__(webhook_url=webhook_url, clock=clock, **options)
        self.api_id = api_id
        self.price = price
        self.balance = balance
        self._status: dict[str, int] = {}
        self._serial = 10_000_000
        #: Named errors the next status calls answer, one per call (a poll that fails).
        self.status_errors: list[str] = []

    def settings(self) -> dict[str, Any]:
        return {"type": "smsru", "api_id": self.api_id, "api_url": self.api_url}

    def normalize(self, address: str) -> str:
        return re.sub(r"[^0-9]", "", address) or address

    def _routes(self) -> list[tuple[str, str, Handler]]:
        return [
            (method, path, handler)
            for path, handler in (("/sms/send", self._send_sms), ("/sms/status", self._status_of))
            for method in ("GET", "POST")
        ]

    def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _answer({"status": "ERROR", "status_code": 211, "status_text": "Метод не найден"})

    def _reset_state(self) -> None:
        self._status.clear()
        self.status_errors.clear()

    # -- signing ------------------------------------------------------------------

    def callback_hash(self, events: list[str]) -> str:
        return sha256_hex((self.api_id + "".join(events)).encode("utf-8"))

    def _sign(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/x-www-form-urlencoded"}

    async def _attempt(self, hook: Webhook) -> bool:
        """Post once; SMS.ru takes a callback as received only when answered `100`."""
        if hook.url is None or self._session is None:
            return True
        self._busy += 1
        try:
            async with self._session.post(hook.url, data=hook.body, headers=hook.headers) as resp:
                body = await resp.read()
                ok = resp.status == 200 and body.strip() == b"100"
                hook.attempts.append(
                    Attempt(
                        self.clock.now(), resp.status if ok else None, None if ok else "not 100"
                    )
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            hook.attempts.append(Attempt(self.clock.now(), None, type(exc).__name__))
        finally:
            self._busy -= 1
        last = hook.attempts[-1]
        self._log(f"webhook {hook.kind} -> {hook.url} {last.status or last.error}")
        return hook.delivered

    # -- the API ------------------------------------------------------------------

    def _fields(self, request: web.Request, record: RecordedRequest) -> dict[str, str]:
        form = record.parsed if isinstance(record.parsed, dict) else {}
        fields = {**request.query, **form}
        record.parsed = fields
        return fields

    async def _send_sms(self, request: web.Request) -> web.StreamResponse:
        record = self.record_of(request)
        fields = self._fields(request, record)
        if not same(fields.get("api_id", ""), self.api_id):
            return _refuse(ERRORS["bad_token"])
        to = [n for n in fields.get("to", "").split(",") if n]
        text = fields.get("msg", "")
        if not to:
            return _refuse(ERRORS["invalid_number"])
        if len(to) > 100:
            return _refuse(SmsRuError(213, "Превышено количество номеров (больше 100)"))
        if not text:
            return _refuse(SmsRuError(203, "Нет текста сообщения"))
        address = self.normalize(to[0])
        if _segments(text) > MAX_SEGMENTS:
            record.address, record.entry = address, "too_long"
            return self._number_error(ERRORS["too_long"], address)

        def accept() -> Accepted:
            self._serial += 1
            sms_id = f"{self.new_id():06d}-{self._serial}"
            self._status[sms_id] = 100
            data = {"from": fields.get("from"), "segments": _segments(text)}
            return Accepted(sms_id, address, text, record, data)

        def answer(message: Accepted, entry: Entry) -> web.StreamResponse:
            cost = self.price * message.data["segments"]
            self.balance = round(self.balance - cost, 2)
            return _answer(
                {
                    "status": "OK",
                    "status_code": 100,
                    "sms": {address: {"status": "OK", "status_code": 100, "sms_id": message.id}},
                    "balance": self.balance,
                }
            )

        return await self._send(request, address, accept, answer)

    def _error(self, entry: Entry, address: str) -> web.StreamResponse:
        error: SmsRuError = ERRORS[entry.do]
        if error.code == 503:
            return web.Response(status=503, text="Service Unavailable")
        if error.request:
            return _refuse(error)
        return self._number_error(error, address)

    def _number_error(self, error: SmsRuError, address: str) -> web.StreamResponse:
        return _answer(
            {
                "status": "OK",
                "status_code": 100,
                "sms": {
                    address: {
                        "status": "ERROR",
                        "status_code": error.code,
                        "status_text": error.text,
                    }
                },
                "balance": self.balance,
            }
        )

    async def _status_of(self, request: web.Request) -> web.StreamResponse:
        record = self.record_of(request)
        fields = self._fields(request, record)
        if not same(fields.get("api_id", ""), self.api_id):
            return _refuse(ERRORS["bad_token"])
        ids = [i for i in fields.get("sms_id", "").split(",") if i]
        if not ids:
            return _refuse(SmsRuError(203, "Не указан идентификатор сообщения"))
        if self.status_errors:
            error: SmsRuError = ERRORS[self.status_errors.pop(0)]
            if error.code == 503:
                return web.Response(status=503, text="Service Unavailable")
            return _refuse(error)
        out: dict[str, Any] = {}
        for sms_id in ids:
            code = self._status.get(sms_id, -1)
            if code == -1:
                out[sms_id] = {"status": "ERROR", "status_code": -1, "status_text": _TEXTS[-1]}
                continue
            message = next((m for m in self.outbox if m.id == sms_id), None)
            cost = self.price * (message.data["segments"] if message else 1)
            out[sms_id] = {
                "status": "OK",
                "status_code": code,
                "cost": round(cost, 2),
                "status_text": _TEXTS.get(code, ""),
            }
        return _answer({"status": "OK", "status_code": 100, "sms": out, "balance": self.balance})

    # -- callbacks ----------------------------------------------------------------

    def _receipt(self, message: Accepted, status: str, entry: Entry) -> bytes:
        code = (entry.code or DEFAULT_FAILURE) if status == "failed" else int(status)
        self._status[message.id] = code
        event = f"sms_status\n{message.id}\n{code}\n{int(self.clock.now())}"
        return urlencode([("data[0]", event), ("hash", self.callback_hash([event]))]).encode()


def _answer(data: Any) -> web.Response:
    return json_answer(data)


def _refuse(error: SmsRuError) -> web.Response:
    return _answer({"status": "ERROR", "status_code": error.code, "status_text": error.text})


__all__ = ["ERRORS", "SmsRuEmulator", "SmsRuError"]
