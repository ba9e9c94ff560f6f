"""The Telegram Bot API on loopback.

`GET|POST /bot<token>/<method>` for `getMe`, `sendMessage`, `deleteMessage`,
`setWebhook`, `deleteWebhook` and `getWebhookInfo` (method names in any case),
parameters from the query, a form, multipart or JSON. A malformed token is 404
`Not Found`, a well-formed wrong one 401 `Unauthorized`; answers are the Bot API's
`{"ok": …}` shapes, 429 with `parameters.retry_after` and `Retry-After`. The Bot API
has no delivery receipts: scripts' receipts never post. Inbound events post Updates
(`/start <payload>`, a message, the user blocking or unblocking the bot; `open_link`
with `link=`: the customer opens a `https://t.me/<bot>?start=<payload>` deep link and
presses START) to the webhook with `X-Telegram-Bot-Api-Secret-Token`; a block makes later sends 403
`Forbidden: bot was blocked by the user` until an unblock or a `/start`.
"""

from __future__ import annotations

import itertools
import re
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
    compact,
    json_answer,
)
from cascade_notify.testing.emulators._markup import MarkupError, plain_text
from cascade_notify.testing.emulators._script import Entry

MAX_TEXT: Final = 4096
_TOKEN: Final = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{1,100}")
_SECRET: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")


class BotError(NamedTuple):
    status: int
    description: str


#: Named errors: HTTP status (= `error_code`) and `description` (providers.md §2.4).
ERRORS: Final[Mapping[str, BotError]] = {
    "blocked": BotError(403, "Forbidden: bot was blocked by the user"),
    "deactivated": BotError(403, "Forbidden: user is deactivated"),
    "not_started": BotError(403, "Forbidden: bot can't initiate conversation with a user"),
    "kicked": BotError(403, "Forbidden: bot was kicked from the group chat"),
    "not_member": BotError(403, "Forbidden: bot is not a member of the group chat"),
    "chat_not_found": BotError(400, "Bad Request: chat not found"),
    "private_chat_not_found": BotError(400, "Bad Request: private chat not found"),
    "peer_id_invalid": BotError(400, "Bad Request: PEER_ID_INVALID"),
    "migrated": BotError(400, "Bad Request: group chat was upgraded to a supergroup chat"),
    "too_long": BotError(400, "Bad Request: message is too long"),
    "empty": BotError(400, "Bad Request: message text is empty"),
    "parse_error": BotError(400, "Bad Request: can't parse entities: Can't find end of entity"),
    "rate_limited": BotError(429, "Too Many Requests: retry after {retry_after}"),
    "bad_token": BotError(401, "Unauthorized"),
    "server_error": BotError(500, "Internal Server Error"),
    "bad_gateway": BotError(502, "Bad Gateway"),
}
DEFAULT_RETRY_AFTER: Final = 7


class TelegramEmulator(Emulator):
    """The Bot API for one bot. `token`'s number is the bot's id; `secret_token` goes out
    on every Update (setWebhook can set both the URL and it)."""

    name: ClassVar[str] = "telegram"
    errors: ClassVar[Mapping[str, Any]] = ERRORS
    receipts: ClassVar[Mapping[str, str]] = {}
    events: ClassVar[tuple[str, ...]] = ("start", "message", "block", "unblock", "open_link")
    retry_delays: ClassVar[tuple[float, ...]] = (1.0, 2.0, 5.0, 15.0, 60.0, 300.0)

    def __init__(
        self,
        *,
        token: str = "7000000001:AAemulator-test-token_0000000000000",
        first_name: str = "Acme Notify",
        username: str = "acme_notify_bot",
        secret_token: str | None = None,
        webhook_url: str | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        super().__init__(webhook_url=webhook_url, clock=clock, **options)
        if not _TOKEN.fullmatch(token):
            raise ValueError("a bot token looks like 123456:ABC-def_…")
        self.token = token
        self.bot = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": first_name,
            "username": username,
        }
        self.secret_token = secret_token
        self.deleted: list[tuple[str, int]] = []
        self._updates = itertools.count(100_000_001)
        self._message_ids: dict[str, itertools.count[int]] = {}

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "telegram_bot",
            "token": self.token,
            "api_url": self.api_url,
            "username": self.bot["username"],
        }
        if self.secret_token:
            out["secret_token"] = self.secret_token
        return out

    def _routes(self) -> list[tuple[str, str, Handler]]:
        return [("*", "/bot{token}/{method}", self._method)]

    def _public_path(self, path: str) -> str:
        return re.sub(r"^/bot[^/]*", "/bot<token>", path)

    def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _error(BotError(404, "Not Found"))

    def _sign(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = self.secret_token
        return headers

    def _reset_state(self) -> None:
        self.deleted.clear()
        self._message_ids.clear()

    # -- methods --------------------------------------------------------------

    async def _method(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        if not _TOKEN.fullmatch(token):
            return _error(BotError(404, "Not Found"))
        if not same(token, self.token):
            return _error(ERRORS["bad_token"])
        params = await self._params(request)
        method = request.match_info["method"].lower()
        if method == "getme":
            return json_answer({"ok": True, "result": self.bot})
        if method == "sendmessage":
            return await self._send_message(request, params)
        if method == "deletemessage":
            return self._delete_message(params)
        if method == "setwebhook":
            return self._set_webhook(params)
        if method == "deletewebhook":
            self.webhook_url = None
            return json_answer({"ok": True, "result": True, "description": "Webhook was deleted"})
        if method == "getwebhookinfo":
            info = {"url": self.webhook_url or "", "has_custom_certificate": False}
            return json_answer({"ok": True, "result": {**info, "pending_update_count": 0}})
        return _error(BotError(404, "Not Found"))

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        record = self.record_of(request)
        if isinstance(record.parsed, dict):
            params.update(record.parsed)
        elif request.content_type.startswith("multipart/"):
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
            record.parsed = params
        return params

    async def _send_message(
        self, request: web.Request, params: Mapping[str, Any]
    ) -> web.StreamResponse:
        chat = params.get("chat_id")
        if chat is None or chat == "":
            return _error(BotError(400, "Bad Request: chat_id is empty"))
        text = params.get("text")
        if not isinstance(text, str) or not text:
            return _error(ERRORS["empty"])
        try:
            shown = plain_text(text, params.get("parse_mode") or None)
        except MarkupError as exc:
            reason = str(exc)
            if reason.startswith("unsupported parse_mode"):
                return _error(BotError(400, "Bad Request: unsupported parse_mode"))
            return _error(BotError(400, f"Bad Request: can't parse entities: {reason}"))
        if not shown.strip():
            return _error(ERRORS["empty"])
        if len(shown.encode("utf-16-le")) // 2 > MAX_TEXT:
            return _error(ERRORS["too_long"])
        address = str(chat)
        record = self.record_of(request)

        def accept() -> Accepted:
            ids = self._message_ids.setdefault(address, itertools.count(1))
            message_id = next(ids)
            data = {"message_id": message_id, "date": int(self.clock.now())}
            return Accepted(f"{address}:{message_id}", address, shown, record, data)

        def answer(message: Accepted, entry: Entry) -> web.StreamResponse:
            result = {
                "message_id": message.data["message_id"],
                "date": message.data["date"],
                "text": shown,
                "from": self.bot,
                "chat": _chat(address),
            }
            return json_answer({"ok": True, "result": result})

        return await self._send(request, address, accept, answer)

    def _delete_message(self, params: Mapping[str, Any]) -> web.StreamResponse:
        chat, message_id = str(params.get("chat_id", "")), str(params.get("message_id", ""))
        if not chat:
            return _error(BotError(400, "Bad Request: chat_id is empty"))
        if not message_id.lstrip("-").isdigit():
            return _error(BotError(400, "Bad Request: message identifier is not specified"))
        key = (chat, int(message_id))
        known = any(m.id == f"{chat}:{message_id}" for m in self.outbox)
        if not known or key in self.deleted:
            return _error(BotError(400, "Bad Request: message to delete not found"))
        self.deleted.append(key)
        return json_answer({"ok": True, "result": True})

    def _set_webhook(self, params: Mapping[str, Any]) -> web.StreamResponse:
        url = str(params.get("url", ""))
        secret = params.get("secret_token")
        if secret is not None and not _SECRET.fullmatch(str(secret)):
            return _error(BotError(400, "Bad Request: secret token contains unallowed characters"))
        if not url:
            self.webhook_url = None
            return json_answer({"ok": True, "result": True, "description": "Webhook was deleted"})
        self.webhook_url = url
        self.secret_token = None if secret is None else str(secret)
        return json_answer({"ok": True, "result": True, "description": "Webhook was set"})

    def _error(self, entry: Entry, address: str) -> web.StreamResponse:
        error = ERRORS[entry.do]
        if entry.do == "rate_limited":
            wait = entry.retry_after or DEFAULT_RETRY_AFTER
            return _error(
                error._replace(description=error.description.format(retry_after=wait)),
                parameters={"retry_after": wait},
                headers={"Retry-After": str(wait)},
            )
        if entry.do == "migrated":
            new_id = entry.code or int("-100" + address.lstrip("-"))
            return _error(error, parameters={"migrate_to_chat_id": new_id})
        if entry.do == "bad_gateway":
            page = "<html><head><title>502 Bad Gateway</title></head><body></body></html>"
            return web.Response(status=502, text=page, content_type="text/html")
        if entry.detail is not None:
            error = error._replace(description=entry.detail)
        return _error(error)

    # -- updates --------------------------------------------------------------

    def _event(
        self, name: str, address: str, data: Mapping[str, Any]
    ) -> list[tuple[str, bytes, str | None]]:
        if not address.lstrip("-").isdigit():
            raise ValueError("a Telegram event needs a numeric chat id")
        if name == "open_link":
            name, data = "start", {**data, "payload": self._start_payload(data.get("link"))}
        user = {
            "id": int(address),
            "is_bot": False,
            "first_name": str(data.get("first_name", "Anna")),
            "language_code": str(data.get("language_code", "ru")),
        }
        chat = {"id": int(address), "first_name": user["first_name"], "type": "private"}
        now = int(self.clock.now())
        update: dict[str, Any] = {"update_id": next(self._updates)}
        if name in ("block", "unblock"):
            self.force(address, "blocked" if name == "block" else None)
            old, new = ("member", "kicked") if name == "block" else ("kicked", "member")
            bot_member = {"user": self.bot}
            update["my_chat_member"] = {
                "chat": chat,
                "from": user,
                "date": now,
                "old_chat_member": {**bot_member, "status": old},
                "new_chat_member": {**bot_member, "status": new, "until_date": 0}
                if new == "kicked"
                else {**bot_member, "status": new},
            }
            return [(name, compact(update), None)]
        if name == "start":
            self.force(address, None)
            payload = data.get("payload")
            text = "/start" if not payload else f"/start {payload}"
        else:
            text = str(data.get("text", "Hello"))
        ids = self._message_ids.setdefault(address, itertools.count(1))
        message: dict[str, Any] = {
            "message_id": next(ids),
            "from": user,
            "chat": chat,
            "date": now,
            "text": text,
        }
        if text.startswith("/"):
            command = text.split(" ", 1)[0]
            message["entities"] = [{"offset": 0, "length": len(command), "type": "bot_command"}]
        update["message"] = message
        return [(name, compact(update), None)]

    def _start_payload(self, link: object) -> str | None:
        """What Telegram sends for a deep link to this bot: its `start` payload, or none
        (a payload past 64 characters of `A-Za-z0-9_-` is not passed on)."""
        parts = urlsplit(str(link or ""))
        if parts.scheme != "https" or parts.netloc != "t.me":
            raise ValueError(f"{link!r} is not a https://t.me/ link")
        if parts.path.strip("/").lower() != str(self.bot["username"]).lower():
            raise ValueError(f"{link!r} is not a link to @{self.bot['username']}")
        payload = parse_qs(parts.query).get("start", [""])[0]
        return payload if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", payload) else None


def _chat(address: str) -> dict[str, Any]:
    if address.startswith("@"):
        return {
            "id": -1001000000000,
            "title": address[1:],
            "username": address[1:],
            "type": "channel",
        }
    if address.startswith("-"):
        kind = "supergroup" if address.startswith("-100") else "group"
        return {"id": int(address), "title": "Group", "type": kind}
    return {
        "id": int(address) if address.isdigit() else address,
        "first_name": "Anna",
        "type": "private",
    }


def _error(
    error: BotError,
    *,
    parameters: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "ok": False,
        "error_code": error.status,
        "description": error.description,
    }
    if parameters:
        body["parameters"] = dict(parameters)
    return json_answer(body, status=error.status, headers=headers)


__all__ = ["ERRORS", "BotError", "TelegramEmulator"]
