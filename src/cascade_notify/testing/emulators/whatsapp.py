"""The WhatsApp Cloud API (Meta Graph API) on loopback.

`POST /{version}/{phone_number_id}/messages` with `Authorization: Bearer <token>`,
checked as Meta checks it; answers in Meta's shapes (a fresh `wamid.` id, or the Graph
error envelope with its HTTP status); status webhooks (`sent`, `delivered`, `read`,
`failed`) posted to `webhook_url` with `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(
app secret, raw body)>`, echoing the request's `biz_opaque_callback_data`.
`verify_webhook()` runs the GET handshake Meta runs when a webhook is configured.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Final, NamedTuple

from aiohttp import web

from cascade_notify.clock import Clock
from cascade_notify.providers._signing import hmac_hex, same
from cascade_notify.testing.emulators._base import (
    CONTROL,
    Accepted,
    Emulator,
    Handler,
    RecordedRequest,
    compact,
    json_answer,
)
from cascade_notify.testing.emulators._script import Entry

MAX_TEXT: Final = 4096
MAX_CALLBACK_DATA: Final = 512
WINDOW: Final = 24 * 3600.0
_VERSION: Final = re.compile(r"v[0-9]+\.[0-9]+")


class GraphError(NamedTuple):
    code: int
    http: int
    title: str
    details: str


#: Named errors: Graph code, HTTP status (confirmed pairs per providers.md §1.5; 400 for
#: the rest, whose statuses are unconfirmed), title, details.
ERRORS: Final[Mapping[str, GraphError]] = {
    "undeliverable": GraphError(131026, 400, "Message undeliverable", "Message Undeliverable."),
    "window_closed": GraphError(
        131047,
        400,
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number.",
    ),
    "rate_limited": GraphError(
        130429, 429, "Rate limit hit", "Cloud API message throughput has been reached."
    ),
    "pair_rate_limited": GraphError(
        131056,
        400,
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    ),
    "spam_limited": GraphError(131048, 400, "Spam rate limit hit", "Too many messages blocked."),
    "marketing_limited": GraphError(
        131049,
        400,
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "Per-user marketing limit reached.",
    ),
    "opted_out": GraphError(
        131050,
        400,
        "User stopped marketing messages",
        "This recipient has chosen to stop receiving marketing messages from your business.",
    ),
    "not_allowed": GraphError(
        131030, 400, "Recipient phone number not in allowed list", "Add it to the allowed list."
    ),
    "template_missing": GraphError(
        132001,
        400,
        "Template name does not exist in the translation",
        "The template does not exist in this language or is not approved.",
    ),
    "account_locked": GraphError(131031, 400, "Account has been locked", "Account locked."),
    "bad_token": GraphError(190, 401, "Invalid OAuth access token", "Error validating token."),
    "invalid_parameter": GraphError(100, 400, "Invalid parameter", "Invalid parameter."),
    "app_rate_limited": GraphError(4, 400, "Application request limit reached", "Too many calls."),
    "server_error": GraphError(131000, 500, "Something went wrong", "Something went wrong."),
    "unavailable": GraphError(2, 503, "Service temporarily unavailable", "Try again later."),
}


class WhatsAppEmulator(Emulator):
    """Meta's WhatsApp Cloud API. `templates` (name -> languages) lists the approved
    templates (None: any is approved); `service_window=True` refuses free-form text with
    131047 unless the customer wrote within 24 h (event `message`)."""

    name: ClassVar[str] = "whatsapp"
    errors: ClassVar[Mapping[str, Any]] = ERRORS
    receipts: ClassVar[Mapping[str, str]] = {
        "sent": "sent",
        "delivered": "delivered",
        "read": "read",
        "failed": "failed",
    }
    events: ClassVar[tuple[str, ...]] = ("message", "read", "block", "unblock")
    retry_delays: ClassVar[tuple[float, ...]] = (1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)

    def __init__(
        self,
        *,
        phone_number_id: str = "106540352242922",
        access_token: str = "EAAemulator-access-token",
        app_secret: str = "emulator-app-secret",
        verify_token: str = "emulator-verify-token",
        display_phone_number: str = "15550783881",
        business_account_id: str = "102290129340398",
        api_version: str = "v23.0",
        templates: Mapping[str, Collection[str]] | None = None,
        service_window: bool = False,
        webhook_url: str | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        super().__init__(webhook_url=webhook_url, clock=clock, **options)
        self.phone_number_id = phone_number_id
        self.access_token = access_token
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.display_phone_number = display_phone_number
        self.business_account_id = business_account_id
        self.api_version = api_version
        self.templates = templates
        self.service_window = service_window
        self._last_inbound: dict[str, float] = {}

    def settings(self) -> dict[str, Any]:
        return {
            "type": "whatsapp_cloud",
            "phone_number_id": self.phone_number_id,
            "access_token": self.access_token,
            "app_secret": self.app_secret,
            "verify_token": self.verify_token,
            "api_url": self.api_url,
            "api_version": self.api_version,
        }

    def normalize(self, address: str) -> str:
        return re.sub(r"[^0-9]", "", address) or address

    def _routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/{version}/{phone_number_id}/messages", self._messages),
            ("POST", CONTROL + "verify", self._control_verify),
        ]

    def _sign(self, body: bytes) -> dict[str, str]:
        signature = hmac_hex(self.app_secret.encode("utf-8"), body)
        return {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + signature}

    def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _graph_error(GraphError(100, 404, "Unknown path components", request.path))

    def _reset_state(self) -> None:
        self._last_inbound.clear()

    async def verify_webhook(
        self, url: str | None = None, *, verify_token: str | None = None, challenge: str = ""
    ) -> bool:
        """Meta's GET handshake against `url` (default `webhook_url`): True when the
        receiver answers 200 with the raw challenge."""
        target = url or self.webhook_url
        if target is None:
            raise ValueError("no webhook URL to verify")
        challenge = challenge or str(secrets.randbelow(10**10))
        status, body = await self._get(
            target,
            {
                "hub.mode": "subscribe",
                "hub.verify_token": self.verify_token if verify_token is None else verify_token,
                "hub.challenge": challenge,
            },
        )
        ok = status == 200 and same(body, challenge.encode())
        self._log(f"verify -> {target} {status} ({'ok' if ok else 'refused'})")
        return ok

    async def _control_verify(self, request: web.Request) -> web.StreamResponse:
        ok = await self.verify_webhook()
        return web.json_response({"ok": ok})

    # -- the send -------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        record = self.record_of(request)
        refused = self._check(request, record)
        if refused is not None:
            return _graph_error(refused)
        body: dict[str, Any] = record.parsed
        to = str(body["to"])
        address = self.normalize(to)
        if self.service_window and body.get("type", "text") == "text":
            opened = self._last_inbound.get(address)
            if opened is None or self.clock.now() - opened > WINDOW:
                record.address, record.entry = address, "window_closed"
                return _graph_error(ERRORS["window_closed"])

        def accept() -> Accepted:
            text = body.get("text", {}).get("body") if body.get("type", "text") == "text" else None
            data = {"template": body.get("template"), "to": to}
            if "biz_opaque_callback_data" in body:
                data["biz_opaque_callback_data"] = body["biz_opaque_callback_data"]
            return Accepted(_wamid(address), address, text, record, data)

        def answer(message: Accepted, entry: Entry) -> web.StreamResponse:
            return json_answer(
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": to, "wa_id": address}],
                    "messages": [{"id": message.id}],
                }
            )

        return await self._send(request, address, accept, answer)

    def _check(self, request: web.Request, record: RecordedRequest) -> GraphError | None:
        """What Meta refuses before looking at the recipient, in the order it checks."""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return GraphError(190, 401, "Invalid OAuth access token", "Cannot parse access token")
        if not same(auth[7:].strip(), self.access_token):
            return ERRORS["bad_token"]
        if not _VERSION.fullmatch(request.match_info["version"]):
            return GraphError(100, 400, "Unknown path components", "Unknown Graph API version")
        if request.match_info["phone_number_id"] != self.phone_number_id:
            return GraphError(
                100,
                400,
                "Unsupported post request",
                f"Object with ID '{request.match_info['phone_number_id']}' does not exist.",
            )
        body = record.parsed
        if not isinstance(body, dict):
            return GraphError(100, 400, "Invalid parameter", "The body must be a JSON object.")
        if body.get("messaging_product") != "whatsapp":
            return GraphError(
                100, 400, "Invalid parameter", "Param messaging_product must be 'whatsapp'."
            )
        if not body.get("to"):
            return _missing("to")
        kind = body.get("type", "text")
        if kind == "text":
            text = body.get("text")
            if not isinstance(text, dict) or not isinstance(text.get("body"), str):
                return _missing("text.body")
            if not text["body"]:
                return _missing("text.body")
            if len(text["body"]) > MAX_TEXT:
                return GraphError(
                    100,
                    400,
                    "Invalid parameter",
                    f"Param text['body'] must be at most {MAX_TEXT} characters long.",
                )
        elif kind == "template":
            refused = self._check_template(body.get("template"))
            if refused is not None:
                return refused
        else:
            return GraphError(131051, 400, "Unsupported message type", f"Type {kind!r}.")
        opaque = body.get("biz_opaque_callback_data")
        if opaque is not None and (
            not isinstance(opaque, str) or len(opaque.encode()) > MAX_CALLBACK_DATA
        ):
            return GraphError(
                100,
                400,
                "Invalid parameter",
                f"Param biz_opaque_callback_data must be a string of at most "
                f"{MAX_CALLBACK_DATA} bytes.",
            )
        return None

    def _check_template(self, template: Any) -> GraphError | None:
        if not isinstance(template, dict) or not isinstance(template.get("name"), str):
            return _missing("template.name")
        language = template.get("language")
        if not isinstance(language, dict) or not isinstance(language.get("code"), str):
            return _missing("template.language.code")
        if self.templates is not None and language["code"] not in self.templates.get(
            template["name"], ()
        ):
            return ERRORS["template_missing"]
        return None

    def _error(self, entry: Entry, address: str) -> web.StreamResponse:
        error = ERRORS[entry.do]
        if entry.detail is not None:
            error = error._replace(details=entry.detail)
        return _graph_error(error)

    # -- webhooks -------------------------------------------------------------

    def _envelope(self, value: dict[str, Any]) -> bytes:
        value = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": self.display_phone_number,
                "phone_number_id": self.phone_number_id,
            },
            **value,
        }
        return compact(
            {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": self.business_account_id,
                        "changes": [{"field": "messages", "value": value}],
                    }
                ],
            }
        )

    def _receipt(self, message: Accepted, status: str, entry: Entry) -> bytes:
        item: dict[str, Any] = {
            "id": message.id,
            "status": status,
            "timestamp": str(int(self.clock.now())),
            "recipient_id": message.address,
        }
        if "biz_opaque_callback_data" in message.data:
            item["biz_opaque_callback_data"] = message.data["biz_opaque_callback_data"]
        if status == "failed":
            error = ERRORS["undeliverable"]
            code = entry.code or error.code
            named = next((e for e in ERRORS.values() if e.code == code), error)
            item["errors"] = [
                {
                    "code": code,
                    "title": named.title,
                    "message": named.title,
                    "error_data": {"details": entry.detail or named.details},
                    "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
                }
            ]
        else:
            category = "utility" if message.data.get("template") else "service"
            conversation: dict[str, Any] = {
                "id": message.id[-12:].lower(),
                "origin": {"type": category},
            }
            if status == "sent":
                conversation["expiration_timestamp"] = str(int(self.clock.now() + WINDOW))
            item["conversation"] = conversation
            item["pricing"] = {
                "billable": category != "service",
                "pricing_model": "PMP",
                "category": category,
                "type": "regular" if category != "service" else "free_customer_service",
            }
        return self._envelope({"statuses": [item]})

    def _event(
        self, name: str, address: str, data: Mapping[str, Any]
    ) -> list[tuple[str, bytes, str | None]]:
        if name == "block":
            self.force(address, "undeliverable")
            return []
        if name == "unblock":
            self.force(address, None)
            return []
        if name == "read":
            sent = self.sent_to(address)
            wanted = data.get("message_id")
            message = next((m for m in reversed(sent) if wanted in (None, m.id)), None)
            if message is None:
                raise ValueError(f"no message to {address} to read")
            return [("read", self._receipt(message, "read", Entry("read")), message.id)]
        self._last_inbound[address] = self.clock.now()
        inbound = _wamid(address)
        body = self._envelope(
            {
                "contacts": [
                    {"profile": {"name": str(data.get("name", "Anna"))}, "wa_id": address}
                ],
                "messages": [
                    {
                        "from": address,
                        "id": inbound,
                        "timestamp": str(int(self.clock.now())),
                        "type": "text",
                        "text": {"body": str(data.get("text", "Hello"))},
                    }
                ],
            }
        )
        return [("message", body, inbound)]


def _wamid(address: str) -> str:
    raw = b"\x15\x02\x00\x11\x18\x12" + address.encode() + secrets.token_bytes(12)
    return "wamid." + base64.b64encode(raw).decode("ascii").rstrip("=")


def _missing(param: str) -> GraphError:
    return GraphError(
        131008, 400, "Required parameter is missing", f"Parameter {param} is required."
    )


def _graph_error(error: GraphError) -> web.Response:
    body: dict[str, Any] = {
        "message": f"(#{error.code}) {error.title}",
        "type": "OAuthException",
        "code": error.code,
        "error_data": {"messaging_product": "whatsapp", "details": error.details},
        "fbtrace_id": base64.b64encode(secrets.token_bytes(9)).decode("ascii"),
    }
    return json_answer({"error": body}, status=error.http)


__all__ = ["ERRORS", "GraphError", "WhatsAppEmulator"]
