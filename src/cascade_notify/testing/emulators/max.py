"""The MAX Bot API on loopback (providers.md §3a).

`GET /me`, `POST /messages` (query `user_id` or `chat_id`, a JSON body) and
`GET|POST|DELETE /subscriptions`. `Authorization` must be the bare test token: a missing
header, a wrong token or a `Bearer …` value is 401 `verify.token`. Errors are non-2xx
with `{"code", "message"}`; text over 4000 characters is 400 `proto.payload`. MAX has no
receipts: scripts' receipts never post. Inbound events post Updates (`bot_started` with
a payload, `bot_stopped`, `message_created`, `dialog_removed`) to the subscribed URL
with `X-Max-Bot-Api-Secret`, retried while the receiver does not answer 200; a
`bot_stopped` makes later sends 403 `chat.denied` (`error.dialog.suspended`) until a
`bot_started`. An event may be delayed (`delay=` seconds on the clock) or duplicated
(`duplicate=True`).
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar, Final, NamedTuple
from urllib.parse import parse_qs, urlsplit

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

MAX_TEXT: Final = 4000
_SECRET: Final = re.compile(r"[A-Za-z0-9_-]{5,256}")
_ID: Final = re.compile(r"-?[0-9]{1,19}")


class MaxError(NamedTuple):
    status: int
    code: str | None
    message: str


#: Named errors: HTTP status, `code` and `message` (providers.md §3a.4). Only
#: `verify.token`, `attachment.not.ready` and `chat.denied` are confirmed code strings.
ERRORS: Final[Mapping[str, MaxError]] = {
    "bad_token": MaxError(401, "verify.token", "Invalid access_token"),
    "stopped": MaxError(403, "chat.denied", "Key: error.dialog.suspended, args: [{user},]."),
    "no_access": MaxError(403, "chat.denied", "chat.denied"),
    "not_started": MaxError(404, "dialog.not.found", "error.dialog.notfound"),
    "chat_not_found": MaxError(404, "chat.not.found", "Chat {user} not found"),
    "user_not_found": MaxError(404, "user.not.found", "User {user} not found"),
    "bad_request": MaxError(400, "proto.payload", "Invalid request payload"),
    "too_long": MaxError(400, "proto.payload", "text: size must be between 0 and 4000"),
    "attachment_not_ready": MaxError(
        400, "attachment.not.ready", "Key: errors.process.attachment.file.not.processed"
    ),
    "method_not_allowed": MaxError(405, None, "Method not allowed"),
    "rate_limited": MaxError(429, "too.many.requests", "Too many requests"),
    "server_error": MaxError(500, "internal.error", "Internal error"),
    "unavailable": MaxError(503, "service.unavailable", "Service unavailable"),
    "bad_gateway": MaxError(502, None, "<html><body>502 Bad Gateway</body></html>"),
    # codes no table lists: classified by their status alone
    "other_403": MaxError(403, "access.denied", "Access denied"),
    "other_404": MaxError(404, "not.found", "Not found"),
    "other_400": MaxError(400, "some.new.code", "Something else"),
}


class MaxEmulator(Emulator):
    """One MAX bot. `secret` goes out on every Update (a `POST /subscriptions` sets the
    URL and it); `webhook_url` given here counts as a subscription."""

    name: ClassVar[str] = "max"
    errors: ClassVar[Mapping[str, Any]] = ERRORS
    receipts: ClassVar[Mapping[str, str]] = {}
    events: ClassVar[tuple[str, ...]] = (
        "bot_started",
        "bot_stopped",
        "message_created",
        "dialog_removed",
        "open_link",
    )
    retry_delays: ClassVar[tuple[float, ...]] = (1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)

    def __init__(
        self,
        *,
        token: str = "max-emulator-test-token-0001",
        secret: str | None = "test_Secret-42",
        bot_id: int = 7000000002,
        first_name: str = "Acme Notify",
        username: str = "acme_notify_bot",
        webhook_url: str | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        super().__init__(webhook_url=webhook_url, clock=clock, **options)
        if secret is not None and not _SECRET.fullmatch(secret):
            raise ValueError("a MAX secret is 5 to 256 characters of A-Z a-z 0-9 _ -")
        self.token = token
        self.secret = secret
        self.bot = {
            "user_id": bot_id,
            "first_name": first_name,
            "username": username,
            "is_bot": True,
        }
        self.update_types: list[str] | None = None
        self._seq = itertools.count(113584739201938475)
        self._chats: dict[str, int] = {}

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "max_bot",
            "token": self.token,
            "api_url": self.api_url,
            "username": self.bot["username"],
        }
        if self.secret is not None:
            out["webhook_secret"] = self.secret
        return out

    def _routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/me", self._me),
            ("POST", "/messages", self._messages),
            ("GET", "/subscriptions", self._subscriptions),
            ("POST", "/subscriptions", self._subscribe),
            ("DELETE", "/subscriptions", self._unsubscribe),
        ]

    def _not_found(self, request: web.Request) -> web.StreamResponse:
        return json_answer({"code": "not.found", "message": "Path not found"}, status=404)

    def _sign(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.secret is not None:
            headers["X-Max-Bot-Api-Secret"] = self.secret
        return headers

    def _reset_state(self) -> None:
        self._chats.clear()

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization")
        return given is not None and same(given, self.token)

    def chat_id(self, user_id: str) -> int:
        """The dialog's chat id for a user (stable for the emulator's life)."""
        return self._chats.setdefault(user_id, 51234567 + len(self._chats))

    # -- methods --------------------------------------------------------------

    async def _me(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(ERRORS["bad_token"])
        return json_answer({**self.bot, "name": self.bot["first_name"], "description": None})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(ERRORS["bad_token"])
        user, chat = request.query.get("user_id"), request.query.get("chat_id")
        given = user if user is not None else chat
        if given is None or not _ID.fullmatch(given):
            return _error(MaxError(400, "proto.payload", "user_id or chat_id is required"))
        address: str = given
        body = self.record_of(request).parsed
        if request.content_type != "application/json" or not isinstance(body, dict):
            return _error(MaxError(400, "proto.payload", "Invalid request body"))
        text = body.get("text")
        if text is None and not body.get("attachments"):
            return _error(MaxError(400, "proto.payload", "text or attachments is required"))
        if text is not None and not isinstance(text, str):
            return _error(MaxError(400, "proto.payload", "text must be a string"))
        if text is not None and len(text) > MAX_TEXT:
            return _error(ERRORS["too_long"])
        if body.get("format") not in (None, "markdown", "html"):
            return _error(MaxError(400, "proto.payload", "format: unknown value"))
        record = self.record_of(request)

        def accept() -> Accepted:
            data: dict[str, Any] = {
                "mid": "mid." + secrets.token_hex(16),
                "seq": next(self._seq),
                "timestamp": self._ms(),
            }
            return Accepted(data["mid"], address, text, record, data)

        def answer(message: Accepted, entry: Entry) -> web.StreamResponse:
            recipient: dict[str, Any] = {"chat_type": "dialog"}
            if user is not None:
                recipient.update(chat_id=self.chat_id(address), user_id=int(address))
            else:
                recipient["chat_id"] = int(address)
            body_out: dict[str, Any] = {"mid": message.data["mid"], "seq": message.data["seq"]}
            if text is not None:
                body_out["text"] = text
            result = {
                "sender": self.bot,
                "recipient": recipient,
                "timestamp": message.data["timestamp"],
                "body": body_out,
            }
            return json_answer({"message": result})

        return await self._send(request, address, accept, answer)

    async def _subscriptions(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(ERRORS["bad_token"])
        subs = []
        if self.webhook_url:
            subs.append(
                {"url": self.webhook_url, "time": self._ms(), "update_types": self.update_types}
            )
        return json_answer({"subscriptions": subs})

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(ERRORS["bad_token"])
        body = self.record_of(request).parsed
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            return _error(MaxError(400, "proto.payload", "url is required"))
        secret = body.get("secret")
        if secret is not None and not (isinstance(secret, str) and _SECRET.fullmatch(secret)):
            return json_answer({"success": False, "message": "secret: invalid format"})
        types = body.get("update_types")
        self.webhook_url = body["url"]
        self.secret = secret
        self.update_types = list(types) if isinstance(types, list) else None
        return json_answer({"success": True})  # unknown fields (`version`) are ignored

    async def _unsubscribe(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(ERRORS["bad_token"])
        url = request.query.get("url")
        if url is None:
            return _error(MaxError(400, "proto.payload", "url is required"))
        if url == self.webhook_url:
            self.webhook_url = None
        return json_answer({"success": True})

    def _error(self, entry: Entry, address: str) -> web.StreamResponse:
        error = ERRORS[entry.do]
        if entry.do == "bad_gateway":
            return web.Response(status=502, text=error.message, content_type="text/html")
        headers = None
        if entry.do == "rate_limited" and entry.retry_after is not None:
            headers = {"Retry-After": str(entry.retry_after)}  # none documented: opt-in
        message = entry.detail if entry.detail is not None else error.message
        return _error(error._replace(message=message.format(user=address)), headers=headers)

    def _ms(self) -> int:
        return int(self.clock.now() * 1000)

    # -- updates --------------------------------------------------------------

    async def event(self, name: str, address: str, **data: Any) -> list[Webhook]:
        """As the base's, plus `delay=` (seconds on the clock before posting; the hooks
        are then posted in the background and [] returned) and `duplicate=True` (the
        same Update posted twice, as MAX's redelivery does)."""
        delay = data.pop("delay", None)
        if delay is None:
            return await super().event(name, address, **data)
        if name not in self.events:
            raise ValueError(f"unknown event {name!r}; known: {', '.join(self.events)}")

        async def later() -> None:
            await self.clock.sleep(float(delay))
            await super(MaxEmulator, self).event(name, address, **data)

        self._spawn(later())
        return []

    def _webhook(self, kind: str, body: bytes, message_id: str | None = None) -> Webhook:
        hook = super()._webhook(kind, body, message_id)
        if self.update_types is not None and kind not in self.update_types:
            hook.url = None  # not subscribed to: recorded, not posted
        return hook

    def _event(
        self, name: str, address: str, data: Mapping[str, Any]
    ) -> list[tuple[str, bytes, str | None]]:
        if not address.isdigit():
            raise ValueError("a MAX event needs a numeric user id")
        if name == "open_link":
            name, data = "bot_started", {**data, "payload": self._start_payload(data.get("link"))}
        user = {
            "user_id": int(address),
            "first_name": str(data.get("first_name", "Anna")),
            "is_bot": False,
            "last_activity_time": self._ms(),
        }
        update: dict[str, Any] = {"update_type": name, "timestamp": self._ms()}
        if name in ("bot_started", "bot_stopped", "dialog_removed"):
            update.update(chat_id=self.chat_id(address), user=user)
            if name == "bot_started":
                self.force(address, None)
                if data.get("payload") is not None:
                    update["payload"] = str(data["payload"])
            else:
                self.force(address, "stopped")
        else:
            mid = "mid." + secrets.token_hex(16)
            update["message"] = {
                "sender": user,
                "recipient": {"chat_id": self.chat_id(address), "chat_type": "dialog"},
                "timestamp": self._ms(),
                "body": {"mid": mid, "seq": next(self._seq), "text": str(data.get("text", "Hi"))},
            }
        update["user_locale"] = str(data.get("user_locale", "ru"))
        body = compact(update)
        copies = 2 if data.get("duplicate") else 1
        return [(name, body, None)] * copies

    def _start_payload(self, link: object) -> str | None:
        """What MAX sends for a deep link to this bot: its `start` payload, or none (MAX
        drops a payload past 128 characters)."""
        parts = urlsplit(str(link or ""))
        if parts.scheme != "https" or parts.netloc != "max.ru":
            raise ValueError(f"{link!r} is not a https://max.ru/ link")
        if parts.path.strip("/") != self.bot["username"]:
            raise ValueError(f"{link!r} is not a link to {self.bot['username']}")
        payload = parse_qs(parts.query).get("start", [""])[0]
        return payload if 0 < len(payload) <= 128 else None


def _error(error: MaxError, headers: Mapping[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"message": error.message}
    if error.code is not None:
        body = {"code": error.code, **body}
    return json_answer(body, status=error.status, headers=headers)


__all__ = ["ERRORS", "MaxEmulator", "MaxError"]
