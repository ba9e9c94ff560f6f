"""VK community messages and the Callback API on loopback (providers.md §3b).

`GET|POST /method/<name>` for `messages.send`, `messages.getConversationsById`,
`messages.isMessagesFromGroupAllowed` and `groups.getCallbackConfirmationCode`:
parameters from the query or a form (a JSON body is refused), the community token in
`Authorization: Bearer` or `access_token`, `v` required. Every answer is HTTP 200 with
`response` or `error` (`error_code`, `error_msg`, `request_params`), except the
`http_error`/`not_json` scripts. `messages.send` needs `random_id` (error 100 without);
a repeat of a `random_id` answers the first message's id and delivers nothing (the
idempotency VK documents), before any script is consulted.

Callbacks: `{"type", "object", "group_id", "event_id", "v", "secret"}` posted to the
webhook, re-posted with `X-Retry-Counter` until the answer is 200 with the body `ok`;
the `confirmation` event succeeds only if the body is the confirmation code. A `read`
script posts `message_read` after the message; `event()` triggers `message_allow`
(`key=`), `message_deny` (later sends 901 until an allow), `message_read`
(`read_message_id=`, by default the peer's latest message, covering earlier ones) and
`message_new`, with `delay=` seconds and `duplicate=True` (the same `event_id` twice).
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar, Final, NamedTuple
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web

from cascade_notify.clock import Clock
from cascade_notify.providers._signing import same
from cascade_notify.testing.emulators._base import (
    Accepted,
    Attempt,
    Emulator,
    Handler,
    Webhook,
    compact,
    json_answer,
)
from cascade_notify.testing.emulators._script import Entry

MAX_TEXT: Final = 9000
RANDOM_ID_MAX: Final = 2**31 - 1  # what the emulator takes; the real range is unconfirmed


class VkError(NamedTuple):
    code: int
    message: str


#: Named errors: `error_code` and `error_msg` (providers.md §3b.4).
ERRORS: Final[Mapping[str, VkError]] = {
    "unknown_error": VkError(1, "Unknown error occurred"),
    "bad_token": VkError(5, "User authorization failed: invalid access_token (4)."),
    "rate_limited": VkError(6, "Too many requests per second"),
    "no_messages_right": VkError(7, "Permission to perform this action is denied"),
    "flood": VkError(9, "Flood control"),
    "server_error": VkError(10, "Internal server error"),
    "captcha": VkError(14, "Captcha needed"),
    "access_denied": VkError(15, "Access denied"),
    "user_deleted": VkError(18, "User was deleted or banned"),
    "group_auth": VkError(27, "Group authorization failed: method is unavailable with group auth."),
    "rate_limit_reached": VkError(29, "Rate limit reached"),
    "bad_param": VkError(100, "One of the parameters specified was missing or invalid"),
    "not_found": VkError(104, "Not found"),
    "invalid_user": VkError(113, "Invalid user id"),
    "group_denied": VkError(203, "Access to group denied"),
    "blacklisted": VkError(900, "Can't send messages for users from blacklist"),
    "not_allowed": VkError(901, "Can't send messages for users without permission"),
    "privacy": VkError(902, "Can't send messages to this user due to their privacy settings"),
    "bad_keyboard": VkError(911, "Keyboard format is invalid"),
    "bot_feature": VkError(912, "This is a chat bot feature, change this status in settings"),
    "too_many_forwards": VkError(913, "Too many forwarded messages"),
    "too_long": VkError(914, "Message is too long"),
    "chat_no_access": VkError(917, "You don't have access to this chat"),
    "cant_forward": VkError(921, "Can't forward these messages"),
    "left_chat": VkError(922, "You left this chat"),
    "not_admin": VkError(925, "You are not admin of this chat"),
    "contact_not_found": VkError(936, "Contact not found"),
    "too_many_posts": VkError(940, "Too many posts in messages"),
    "bad_intent": VkError(943, "Cannot use this intent"),
    "intent_limit": VkError(944, "Limits overflow for this intent"),
    "chat_disabled": VkError(945, "Chat was disabled"),
    "chat_unsupported": VkError(946, "Chat not supported"),
    "reply_timeout": VkError(950, "Can't send message, reply timed out"),
    "notifications_only": VkError(985, "Cannot write to notifications only groups"),
    "need_request": VkError(987, "Need message request"),
    "pending_request": VkError(988, "Pending message request"),
    "writing_disabled": VkError(1012, "Writing is disabled for this chat"),
    "unlisted": VkError(4242, "An error no table lists"),
    # not VK's envelope at all: a gateway in front of it
    "http_error": VkError(502, "<html><body>502 Bad Gateway</body></html>"),
    "not_json": VkError(200, "<html><body>maintenance</body></html>"),
}


class VkEmulator(Emulator):
    """One VK community: its token, id, Callback API confirmation code and secret."""

    name: ClassVar[str] = "vk"
    errors: ClassVar[Mapping[str, Any]] = ERRORS
    receipts: ClassVar[Mapping[str, str]] = {"read": "message_read"}
    events: ClassVar[tuple[str, ...]] = (
        "confirmation",
        "message_allow",
        "message_deny",
        "message_read",
        "message_new",
        "open_link",
    )
    retry_delays: ClassVar[tuple[float, ...]] = (10.0, 30.0, 60.0, 300.0, 900.0)

    def __init__(
        self,
        *,
        access_token: str = "vk1.a.emulator-test-token",
        group_id: int = 200000001,
        confirmation_code: str = "a1b2c3d4",
        secret: str = "test-secret",
        api_version: str = "5.199",
        screen_name: str | None = None,
        webhook_url: str | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        super().__init__(webhook_url=webhook_url, clock=clock, **options)
        self.access_token = access_token
        self.group_id = group_id
        self.confirmation_code = confirmation_code
        self.secret = secret
        self.api_version = api_version
        self.confirmed = False
        #: The community's short name, besides `club<group_id>`, in its vk.me links.
        self.screen_name: str | None = screen_name
        self._message_ids = itertools.count(4821)
        self._by_random: dict[int, Accepted] = {}
        self._cmids: dict[str, itertools.count[int]] = {}
        self._out_read: dict[str, int] = {}

    def settings(self) -> dict[str, Any]:
        return {
            "type": "vk_community",
            "access_token": self.access_token,
            "group_id": self.group_id,
            "confirmation_code": self.confirmation_code,
            "secret": self.secret,
            "api_url": self.api_url,
            "api_version": self.api_version,
        }

    def _routes(self) -> list[tuple[str, str, Handler]]:
        return [("*", "/method/{method}", self._method)]

    def _sign(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json"}  # the secret travels in the body

    def _reset_state(self) -> None:
        self.confirmed = False
        self._by_random.clear()
        self._cmids.clear()
        self._out_read.clear()

    def last_id(self, peer: str) -> int | None:
        """The id of the latest message accepted for `peer`."""
        sent = self.sent_to(peer)
        return int(sent[-1].data["message_id"]) if sent else None

    # -- methods --------------------------------------------------------------

    async def _method(self, request: web.Request) -> web.StreamResponse:
        params: dict[str, str] = dict(request.query)
        parsed = self.record_of(request).parsed
        if request.content_type == "application/json":
            return _error(VkError(8, "Invalid request: JSON bodies are not supported"), params)
        if isinstance(parsed, dict):
            params.update(parsed)
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else params.get("access_token")
        if not token:
            return _error(VkError(5, "User authorization failed: no access_token passed."), params)
        if not same(token, self.access_token):
            return _error(ERRORS["bad_token"], params)
        if not params.get("v"):
            return _error(VkError(8, "Invalid request: v (version) is required"), params)
        method = request.match_info["method"]
        if method == "messages.send":
            return await self._send_message(request, params)
        if method == "messages.getConversationsById":
            return self._conversations(params)
        if method == "messages.isMessagesFromGroupAllowed":
            user = params.get("user_id", "")
            allowed = self._forced.get(user) != "not_allowed"
            return json_answer({"response": {"is_allowed": int(allowed)}})
        if method == "groups.getCallbackConfirmationCode":
            return json_answer({"response": {"code": self.confirmation_code}})
        return _error(VkError(3, "Unknown method passed"), params)

    async def _send_message(
        self, request: web.Request, params: Mapping[str, str]
    ) -> web.StreamResponse:
        peer = params.get("peer_id") or params.get("user_id") or ""
        if not peer.lstrip("-").isdigit():
            return _error(ERRORS["bad_param"]._replace(message=_missing("peer_id")), params)
        raw = params.get("random_id", "")
        if not raw.lstrip("-").isdigit() or not -RANDOM_ID_MAX - 1 <= int(raw) <= RANDOM_ID_MAX:
            return _error(ERRORS["bad_param"]._replace(message=_missing("random_id")), params)
        text = params.get("message", "")
        if not text and not params.get("attachment"):
            return _error(ERRORS["bad_param"]._replace(message=_missing("message")), params)
        if len(text) > MAX_TEXT:
            return _error(ERRORS["too_long"], params)
        key = int(raw)
        record = self.record_of(request)
        first = self._by_random.get(key) if key != 0 else None
        if first is not None:  # the same sender and random_id: no second message
            record.address, record.entry = first.address, "duplicate"
            return json_answer({"response": first.data["message_id"]})

        def accept() -> Accepted:
            message_id = next(self._message_ids)
            cmid = next(self._cmids.setdefault(peer, itertools.count(1)))
            data = {"message_id": message_id, "conversation_message_id": cmid, "random_id": key}
            message = Accepted(f"{peer}:{message_id}", peer, text, record, data)
            if key != 0:  # 0 reportedly turns the check off
                self._by_random[key] = message
            return message

        def answer(message: Accepted, entry: Entry) -> web.StreamResponse:
            return json_answer({"response": message.data["message_id"]})

        return await self._send(request, peer, accept, answer)

    def _conversations(self, params: Mapping[str, str]) -> web.StreamResponse:
        items = []
        for peer in filter(None, params.get("peer_ids", "").split(",")):
            allowed = self._forced.get(peer) != "not_allowed"
            items.append(
                {
                    "peer": {"id": int(peer), "type": "user", "local_id": int(peer)},
                    "in_read": 0,
                    "out_read": self._out_read.get(peer, 0),
                    "last_message_id": self.last_id(peer) or 0,
                    "can_write": {"allowed": allowed}
                    if allowed
                    else {"allowed": False, "reason": 901},
                }
            )
        return json_answer({"response": {"count": len(items), "items": items}})

    def _error(self, entry: Entry, address: str) -> web.StreamResponse:
        error = ERRORS[entry.do]
        if entry.do == "http_error":
            return web.Response(status=502, text=error.message, content_type="text/html")
        if entry.do == "not_json":
            return web.Response(status=200, text=error.message, content_type="text/html")
        if entry.detail is not None:
            error = error._replace(message=entry.detail)
        extra: dict[str, Any] = {}
        if entry.do == "captcha":
            extra = {"captcha_sid": "548745127", "captcha_img": "https://api.vk.com/captcha.php"}
        return _error(error, {"peer_id": address}, **extra)

    # -- callbacks ------------------------------------------------------------

    def _callback(self, kind: str, data: Mapping[str, Any], event_id: str) -> bytes:
        return compact(
            {
                "type": kind,
                "object": dict(data),
                "group_id": self.group_id,
                "event_id": event_id,
                "v": self.api_version,
                "secret": self.secret,
            }
        )

    def _receipt(self, message: Accepted, status: str, entry: Entry) -> bytes:
        read_id = int(message.data["message_id"])
        self._out_read[message.address] = max(self._out_read.get(message.address, 0), read_id)
        event_id = hashlib.sha1(f"{status}:{message.id}".encode()).hexdigest()  # noqa: S324
        read = {
            "from_id": int(message.address),
            "peer_id": int(message.address),
            "read_message_id": read_id,
            "conversation_message_id": message.data["conversation_message_id"],
        }
        return self._callback(status, read, event_id)

    async def event(self, name: str, address: str, **data: Any) -> list[Webhook]:
        """As the base's, plus `delay=` (seconds on the clock; posted in the background,
        [] returned) and `duplicate=True`. `confirmation` is posted once, not retried:
        `confirmed` says whether the receiver answered the code."""
        if name == "confirmation":
            body = compact({"type": "confirmation", "group_id": self.group_id})
            hook = self._webhook("confirmation", body)
            await self._attempt(hook)
            self.confirmed = hook.delivered
            return [hook]
        delay = data.pop("delay", None)
        if delay is None:
            return await super().event(name, address, **data)
        if name not in self.events:
            raise ValueError(f"unknown event {name!r}; known: {', '.join(self.events)}")

        async def later() -> None:
            await self.clock.sleep(float(delay))
            await super(VkEmulator, self).event(name, address, **data)

        self._spawn(later())
        return []

    def _event(
        self, name: str, address: str, data: Mapping[str, Any]
    ) -> list[tuple[str, bytes, str | None]]:
        if not address.isdigit():
            raise ValueError("a VK event needs a numeric user id")
        user = int(address)
        ref: str | None = None
        if name == "open_link":  # the person follows vk.me/<community>?ref=… and presses Start
            name, ref = "message_new", self._ref(data.get("link"))
            data = {**data, "text": data.get("text", "Начать")}
        message_id: str | None = None
        obj: dict[str, Any]
        if name == "message_allow":
            self.force(address, None)
            obj = {"user_id": user}
            if data.get("key") is not None:
                obj["key"] = str(data["key"])
        elif name == "message_deny":
            self.force(address, "not_allowed")
            obj = {"user_id": user}
        elif name == "message_read":
            read_id = data.get("read_message_id", self.last_id(address))
            if read_id is None:
                raise ValueError(f"nothing was sent to {address} to read")
            self._out_read[address] = max(self._out_read.get(address, 0), int(read_id))
            obj = {
                "from_id": user,
                "peer_id": user,
                "read_message_id": int(read_id),
                "conversation_message_id": 0,
            }
            message_id = f"{address}:{read_id}"
        else:
            obj = {
                "message": {
                    "id": next(self._message_ids),
                    "date": int(self.clock.now()),
                    "peer_id": user,
                    "from_id": user,
                    "out": 0,
                    "text": str(data.get("text", "Thanks!")),
                    "conversation_message_id": next(
                        self._cmids.setdefault(address, itertools.count(1))
                    ),
                    **({"ref": ref, "ref_source": ""} if ref is not None else {}),
                },
                "client_info": {"keyboard": True, "inline_keyboard": True, "lang_id": 0},
            }
        body = self._callback(name, obj, secrets.token_hex(20))
        copies = 2 if data.get("duplicate") else 1
        return [(name, body, message_id)] * copies

    def _ref(self, link: object) -> str:
        """The `ref` of a `https://vk.me/<community>?ref=<ref>` link to this community."""
        parts = urlsplit(str(link or ""))
        if parts.scheme != "https" or parts.netloc != "vk.me":
            raise ValueError(f"{link!r} is not a https://vk.me/ link")
        if parts.path.strip("/") not in (f"club{self.group_id}", self.screen_name):
            raise ValueError(f"{link!r} is not a link to community {self.group_id}")
        return parse_qs(parts.query).get("ref", [""])[0]

    async def _attempt(self, hook: Webhook) -> bool:
        """Post once; VK counts only HTTP 200 with the body `ok` (the code for a
        confirmation) as delivered, and marks a retry with `X-Retry-Counter`."""
        if hook.url is None or self._session is None:
            return True
        headers = dict(hook.headers)
        if hook.attempts:
            headers["X-Retry-Counter"] = str(len(hook.attempts))
        wanted = self.confirmation_code if hook.kind == "confirmation" else "ok"
        self._busy += 1
        try:
            async with self._session.post(hook.url, data=hook.body, headers=headers) as resp:
                body = await resp.read()
            if resp.status == 200 and body == wanted.encode():
                hook.attempts.append(Attempt(self.clock.now(), resp.status))
            else:
                why = f"HTTP {resp.status} {body[:40]!r}"
                hook.attempts.append(Attempt(self.clock.now(), None, why))
        except (aiohttp.ClientError, TimeoutError) as exc:
            hook.attempts.append(Attempt(self.clock.now(), None, type(exc).__name__))
        finally:
            self._busy -= 1
        last = hook.attempts[-1]
        self._log(f"webhook {hook.kind} -> {hook.url} {last.status or last.error}")
        return hook.delivered


def _missing(name: str) -> str:
    return f"One of the parameters specified was missing or invalid: {name} is a required parameter"


def _error(error: VkError, params: Mapping[str, str], **extra: Any) -> web.Response:
    echoed = [{"key": k, "value": v} for k, v in params.items() if k != "access_token"]
    body = {"error_code": error.code, "error_msg": error.message, "request_params": echoed}
    return json_answer({"error": {**body, **extra}})


__all__ = ["ERRORS", "VkEmulator", "VkError"]
