"""The Viber REST Bot API on loopback.

`POST /pa/send_message`, `/pa/set_webhook` and `/pa/get_account_info`, the token in
`X-Viber-Auth-Token` (or, as the official SDK sends it, `auth_token` in the body).
Every API-level answer is HTTP 200 with `status`/`status_message`; `message_token` is
a 64-bit integer above 2**53, so a client that reads JSON numbers as floats gets it
wrong. `set_webhook` first posts the signed `webhook` event and answers status 1 unless
the URL answers 200. Callbacks carry `X-Viber-Content-Signature: <hex HMAC-SHA256(auth
token, raw body)>`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar, Final, NamedTuple
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from cascade_notify.clock import Clock
from cascade_notify.providers._signing import hmac_hex, same
from cascade_notify.testing.emulators._base import (
    Accepted,
    Emulator,
    Handler,
    Webhook,
    compact,
    json_answer,
)
from cascade_notify.testing.emulators._script import Entry

MAX_TEXT: Final = 7000
MAX_SENDER_NAME: Final = 28
MAX_TRACKING: Final = 4000
MAX_BODY: Final = 30 * 1024
CHAT_HOSTNAME: Final = "SN-CHAT-05_"
ALL_EVENTS: Final = (
    "delivered",
    "seen",
    "failed",
    "subscribed",
    "unsubscribed",
    "conversation_started",
)
#: Sent whatever `event_types` says (providers.md §3.4; unconfirmed beyond that list).
UNFILTERED: Final = frozenset({"webhook", "message", "subscribed", "conversation_started"})


class ViberStatus(NamedTuple):
    status: int
    message: str


#: Named errors: the `status` and `status_message` of providers.md §3.3.
ERRORS: Final[Mapping[str, ViberStatus]] = {
    "invalid_url": ViberStatus(1, "invalidUrl"),
    "bad_token": ViberStatus(2, "invalidAuthToken"),
    "bad_data": ViberStatus(3, "badData"),
    "missing_data": ViberStatus(4, "missingData"),
    "not_registered": ViberStatus(5, "receiverNotRegistered"),
    "not_subscribed": ViberStatus(6, "receiverNotSubscribed"),
    "account_blocked": ViberStatus(7, "publicAccountBlocked"),
    "account_not_found": ViberStatus(8, "publicAccountNotFound"),
    "suspended": ViberStatus(9, "publicAccountSuspended"),
    "webhook_not_set": ViberStatus(10, "webhookNotSet"),
    "no_suitable_device": ViberStatus(11, "receiverNoSuitableDevice"),
    "rate_limited": ViberStatus(12, "tooManyRequests"),
    "api_version": ViberStatus(13, "apiVersionNotSupported"),
    "incompatible": ViberStatus(14, "incompatibleWithVersion"),
    "not_authorized": ViberStatus(15, "publicAccountNotAuthorized"),
    "general_error": ViberStatus(999, "general error"),  # "other": any code past the table
    "server_error": ViberStatus(500, "Internal Server Error"),  # HTTP 500, not a status
}


class ViberEmulator(Emulator):
    """One Viber bot. `require_webhook=True` refuses sends with status 10 until a webhook
    is set (a `webhook_url` given here counts as set)."""

    name: ClassVar[str] = "viber"
    errors: ClassVar[Mapping[str, Any]] = ERRORS
    receipts: ClassVar[Mapping[str, str]] = {
        "delivered": "delivered",
        "read": "seen",
        "failed": "failed",
    }
    events: ClassVar[tuple[str, ...]] = (
        "subscribed",
        "unsubscribed",
        "conversation_started",
        "message",
        "seen",
        "open_link",
    )
    retry_delays: ClassVar[tuple[float, ...]] = (1.0, 5.0, 30.0, 120.0, 600.0, 1800.0)

    def __init__(
        self,
        *,
        auth_token: str = "4453b6ac1b2c3d4e-e02c5f1217480500-emulatortoken0001",
        bot_name: str = "Acme Delivery",
        require_webhook: bool = False,
        webhook_url: str | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        super().__init__(webhook_url=webhook_url, clock=clock, **options)
        self.auth_token = auth_token
        self.bot_name = bot_name
        self.require_webhook = require_webhook
        self.event_types: tuple[str, ...] = ALL_EVENTS

    def settings(self) -> dict[str, Any]:
        return {
            "type": "viber_bot",
            "auth_token": self.auth_token,
            "sender_name": self.bot_name,
            "api_url": self.api_url + "/pa",
            "uri": self.uri,
        }

    @property
    def uri(self) -> str:
        """The bot's URI, as `get_account_info` gives it and deep links name it."""
        return self.bot_name.lower().replace(" ", "")

    def _routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/pa/send_message", self._send_message),
            ("POST", "/pa/set_webhook", self._set_webhook),
            ("POST", "/pa/get_account_info", self._account_info),
        ]

    def _sign(self, body: bytes) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-Viber-Content-Signature": hmac_hex(self.auth_token.encode("utf-8"), body),
        }

    def _reset_state(self) -> None:
        self.event_types = ALL_EVENTS

    def _webhook(self, kind: str, body: bytes, message_id: str | None = None) -> Webhook:
        hook = super()._webhook(kind, body, message_id)
        if kind not in UNFILTERED and kind not in self.event_types:
            hook.url = None  # filtered out by set_webhook's event_types: recorded, not posted
        return hook

    # -- the API --------------------------------------------------------------

    def _refused(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        """The body, or the answer to a request refused before anything else."""
        record = self.record_of(request)
        try:  # Viber reads the body as JSON whatever the Content-Type says
            body = json.loads(record.body or b"{}")
        except ValueError:
            body = None
        record.parsed = body
        if len(record.body) > MAX_BODY or not isinstance(body, dict):
            return {}, _status(ERRORS["bad_data"])
        token = request.headers.get("X-Viber-Auth-Token") or body.get("auth_token")
        if not token:
            return body, _status(ViberStatus(2, "missing_auth_token"))
        if not isinstance(token, str) or not same(token, self.auth_token):
            return body, _status(ERRORS["bad_token"])
        return body, None

    async def _send_message(self, request: web.Request) -> web.StreamResponse:
        body, refused = self._refused(request)
        if refused is not None:
            return refused
        problem = _check_message(body)
        if problem is not None:
            return _status(ERRORS[problem], message_token=_token())
        if self.require_webhook and not self.webhook_url:
            return _status(ERRORS["webhook_not_set"])
        record = self.record_of(request)
        address = str(body["receiver"])

        def accept() -> Accepted:
            data = {"tracking_data": body.get("tracking_data"), "token": _token()}
            return Accepted(str(data["token"]), address, body.get("text"), record, data)

        def answer(message: Accepted, entry: Entry) -> web.StreamResponse:
            return _status(ViberStatus(0, "ok"), message_token=message.data["token"])

        return await self._send(request, address, accept, answer)

    def _error(self, entry: Entry, address: str) -> web.StreamResponse:
        error = ERRORS[entry.do]
        if entry.do == "server_error":
            return web.Response(status=500, text=error.message)
        if entry.detail is not None:
            error = error._replace(message=entry.detail)
        if entry.code is not None:
            error = error._replace(status=entry.code)
        return _status(error, message_token=_token())

    async def _set_webhook(self, request: web.Request) -> web.StreamResponse:
        body, refused = self._refused(request)
        if refused is not None:
            return refused
        url = body.get("url")
        if not isinstance(url, str):
            return _status(ERRORS["missing_data"])
        if not url:
            self.webhook_url = None
            return _status(ViberStatus(0, "ok"))
        types = body.get("event_types", list(ALL_EVENTS))
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            return _status(ERRORS["bad_data"])
        check = {
            "event": "webhook",
            "timestamp": self._ms(),
            "chat_hostname": CHAT_HOSTNAME,
            "message_token": _token(),
        }
        hook = self._webhook("webhook", compact(check))
        hook.url = url
        if not (await self._attempt(hook) and hook.attempts and hook.attempts[-1].status == 200):
            return _status(ERRORS["invalid_url"])
        self.webhook_url = url
        self.event_types = tuple(types)
        return _status(ViberStatus(0, "ok"), event_types=list(self.event_types))

    async def _account_info(self, request: web.Request) -> web.StreamResponse:
        _, refused = self._refused(request)
        if refused is not None:
            return refused
        subscribers = sorted({m.address for m in self.outbox})
        return _status(
            ViberStatus(0, "ok"),
            id="pa:5000000000000000001",
            name=self.bot_name,
            uri=self.uri,
            category="Business",
            country="RU",
            webhook=self.webhook_url or "",
            event_types=list(self.event_types),
            subscribers_count=len(subscribers),
        )

    # -- callbacks ------------------------------------------------------------

    def _ms(self) -> int:
        return int(self.clock.now() * 1000)

    def _receipt(self, message: Accepted, status: str, entry: Entry) -> bytes:
        body: dict[str, Any] = {
            "event": status,
            "timestamp": self._ms(),
            "chat_hostname": CHAT_HOSTNAME,
            "message_token": message.data["token"],
            "user_id": message.address,
        }
        if status == "failed":
            body["desc"] = entry.detail or "failure description"
        return compact(body)

    def _event(
        self, name: str, address: str, data: Mapping[str, Any]
    ) -> list[tuple[str, bytes, str | None]]:
        user = {
            "id": address,
            "name": str(data.get("name", "Anna")),
            "country": str(data.get("country", "RU")),
            "language": str(data.get("language", "ru")),
            "api_version": 10,
        }
        if name == "open_link":
            name, data = "conversation_started", {**data, "context": self._context(data)}
        body: dict[str, Any] = {
            "event": name,
            "timestamp": self._ms(),
            "chat_hostname": CHAT_HOSTNAME,
            "message_token": _token(),
        }
        if name == "seen":
            last = next(iter(reversed(self.sent_to(address))), None)
            if last is None:
                raise ValueError(f"no message to {address} to see")
            return [("seen", self._receipt(last, "seen", Entry("read")), last.id)]
        if name == "unsubscribed":
            self.force(address, "not_subscribed")
            body["user_id"] = address
        elif name == "subscribed":
            self.force(address, None)
            body["user"] = user
        elif name == "conversation_started":
            body.update(
                type="open",
                context=str(data.get("context", "")),
                user=user,
                subscribed=bool(data.get("subscribed", False)),
            )
        else:
            message = {"type": "text", "text": str(data.get("text", "Hello"))}
            if data.get("tracking_data") is not None:
                message["tracking_data"] = str(data["tracking_data"])
            body.update(sender=user, message=message, silent=False)
        return [(name, compact(body), None)]

    def _context(self, data: Mapping[str, Any]) -> str:
        """The `context` of a `viber://pa?chatURI=<uri>&context=<payload>` link to this bot."""
        link = str(data.get("link") or "")
        parts = urlsplit(link)
        query = parse_qs(parts.query)
        if parts.scheme != "viber" or parts.netloc != "pa":
            raise ValueError(f"{link!r} is not a viber://pa link")
        if query.get("chatURI", [""])[0] != self.uri:
            raise ValueError(f"{link!r} is not a link to {self.uri}")
        return query.get("context", [""])[0]


def _check_message(body: Mapping[str, Any]) -> str | None:
    """The named error a malformed send_message gets, or None."""
    sender = body.get("sender")
    if not body.get("receiver") or not body.get("type"):
        return "missing_data"
    if not isinstance(sender, dict) or not sender.get("name"):
        return "missing_data"
    if not isinstance(sender["name"], str) or len(sender["name"]) > MAX_SENDER_NAME:
        return "bad_data"
    tracking = body.get("tracking_data")
    if tracking is not None and (not isinstance(tracking, str) or len(tracking) > MAX_TRACKING):
        return "bad_data"
    if body["type"] == "text":
        text = body.get("text")
        if not text:
            return "missing_data"
        if not isinstance(text, str) or len(text) > MAX_TEXT:
            return "bad_data"
    return None


def _token() -> int:
    """A fresh message token: 64-bit, odd and above 2**62, so no float holds it exactly."""
    return (1 << 62) | secrets.randbits(61) << 1 | 1


def _status(status: ViberStatus, **fields: Any) -> web.Response:
    body = {"status": status.status, "status_message": status.message, **fields}
    if "message_token" in fields:
        body["chat_hostname"] = CHAT_HOSTNAME
    return json_answer(body)


__all__ = ["ERRORS", "ViberEmulator", "ViberStatus"]
