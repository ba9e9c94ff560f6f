"""`type: viber_bot`: the Viber REST Bot API (providers.md §3).

Out: `POST {api_url}/send_message` (`api_url` is the `/pa` base; the API root is taken
too) with `X-Viber-Auth-Token`, `sender.name` from the settings and our attempt id in
`tracking_data`. Viber answers HTTP 200 for API-level errors too: success is `status`
0, and its `message_token`, a 64-bit integer, is the provider message id, kept exactly
as its decimal digits (Python's json reads big integers as ints, never floats).
Statuses are classified per §3.3; an HTTP refusal by the shared rule; an answer nobody
classified fails safe: permanent, with the raw answer (bounded) in the error.

In: callbacks signed `X-Viber-Content-Signature: <hex HMAC-SHA256(auth token, raw
body)>`, checked in constant time before the body is read. `delivered`, `seen` (a
read) and `failed` become receipts; `unsubscribed` a `gone` signal (reason
`unsubscribed`); `conversation_started` or `subscribed` with a `context` (the deep
link's payload: a link token the notifier checks) a `linked` signal; the `webhook` check that
`set_webhook` makes is answered 200. `set_webhook(url)` registers the URL.

`send_message` has no validity period or TTL, so the step's `deadline_ts` cannot be
passed on (docs/providers/viber.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Final

import httpx
from pydantic import AfterValidator, Field, SecretStr

from cascade_notify._duration import Duration
from cascade_notify.clock import Clock
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnreachableError,
)
from cascade_notify.models import Receipt, ReceiptStatus, Signal, SignalKind
from cascade_notify.providers._http import Answer, HttpClient, HttpProvider, json_body, load_json
from cascade_notify.providers._signing import BadSignature, hmac_hex, same
from cascade_notify.providers.base import (
    Inbound,
    ProviderOverrides,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
)

VIBER_API: Final = "https://chatapi.viber.com/pa"
MAX_TEXT: Final = 7000
MAX_SENDER_NAME: Final = 28
EVENT_TYPES: Final = (
    "delivered",
    "seen",
    "failed",
    "subscribed",
    "unsubscribed",
    "conversation_started",
)
_MAX_TRACKING: Final = 4000
_MAX_ID: Final = 256
_READ: Final = 16 * 1024
_RECEIPTS: Final = {
    "delivered": ReceiptStatus.DELIVERED,
    "seen": ReceiptStatus.READ,
    "failed": ReceiptStatus.FAILED,
}
_LINKING: Final = frozenset({"conversation_started", "subscribed"})

# providers.md §3.3, by status
ACCOUNT: Final = frozenset({2, 7, 8, 9, 10, 15})
PERMANENT: Final = frozenset({1, 3, 4, 14, 16, 17, 18, 19, 20})
UNREACHABLE: Final = frozenset({5, 6, 11, 13})
NOT_SUBSCRIBED: Final = 6
TOO_MANY: Final = 12
#: Deliveries remembered for "other status: retry once" (oldest forgotten first).
_GENERAL_MEMORY: Final = 10_000


def _base_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    base = url.rstrip("/")
    return base if base.endswith("/pa") else base + "/pa"


class ViberSettings(ProviderSettings):
    """Settings of `type: viber_bot`; each may be `${ENV}` in YAML. `api_url` is the API
    root or its `/pa` base, either way."""

    auth_token: SecretStr = Field(
        description="The bot's authentication token (`X-Viber-Auth-Token`); it also keys the "
        "callbacks' signatures."
    )
    sender_name: Annotated[str, Field(min_length=1, max_length=MAX_SENDER_NAME)] = Field(
        description="The sender name shown with each message."
    )
    api_url: Annotated[str, AfterValidator(_base_url)] = Field(
        default=VIBER_API,
        description="The Viber REST API root or its `/pa` base (an emulator's in tests).",
    )
    timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="How long one API call may take before it counts as a timeout (transient, "
        "or an unknown outcome once the request went out).",
    )
    uri: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")] | None = Field(
        default=None,
        description="The bot's URI (`get_account_info`'s `uri`), for its deep links "
        "`viber://pa?chatURI=<uri>&context=...`.",
    )


class ViberOverrides(ProviderOverrides):
    """`options: {<provider>: …}` of a step and `Message.overrides["viber"]`: `text`, a
    `keyboard` (Viber's keyboard object, passed on as it is) and `min_api_version`
    (clients below it answer status 13)."""

    keyboard: dict[str, Any] | None = Field(
        default=None, description="Viber's keyboard object, passed on as it is."
    )
    min_api_version: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="The least Viber client API version the message needs (clients below it "
        "answer status 13).",
    )


class ViberBotProvider(HttpProvider):
    """`type: viber_bot`. Pass `client=` (an `httpx.AsyncClient`) to send through it;
    without one requests go out on the base's own aiohttp session."""

    type_name = "viber_bot"
    default_channel = "viber"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(
        {ReceiptStatus.DELIVERED, ReceiptStatus.READ, ReceiptStatus.FAILED}
    )
    max_length = MAX_TEXT
    signals: ClassVar[bool] = True
    # Viber documents no limit on `context`; we keep to Telegram's
    link_payload = 64
    webhook_methods = frozenset({"POST"})
    Settings = ViberSettings
    Overrides = ViberOverrides
    settings: ViberSettings

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        *,
        clock: Clock | None = None,
        client: httpx.AsyncClient | None = None,
        http: HttpClient | None = None,
    ) -> None:
        super().__init__(name, settings, clock=clock, client=client, http=http)
        token = self.settings.auth_token.get_secret_value()
        self._key = token.encode("utf-8")
        self._headers = {"x-viber-auth-token": token, "content-type": "application/json"}
        self._general: OrderedDict[str, None] = OrderedDict()

    # out

    async def send(self, request: SendRequest) -> SendResult:
        """Send one text; its `message_token`, or the classified refusal."""
        answer = await self.call("send_message", self.payload(request))
        data = _json(answer)
        status = _status(data)
        if answer.ok and status == 0:
            token = _token(data.get("message_token") if data else None)
            if token is not None:
                return SendResult(token)
        raise self.classify(answer, data, request.delivery_id)

    def payload(self, request: SendRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "receiver": request.address,
            "type": "text",
            "text": request.text,
            "sender": {"name": self.settings.sender_name},
        }
        if len(request.attempt_id) <= _MAX_TRACKING:
            payload["tracking_data"] = request.attempt_id
        overrides = request.overrides
        if isinstance(overrides, ViberOverrides):
            if overrides.keyboard is not None:
                payload["keyboard"] = overrides.keyboard
            if overrides.min_api_version is not None:
                payload["min_api_version"] = overrides.min_api_version
        return payload

    async def call(self, method: str, payload: dict[str, Any]) -> Answer:
        """POST `payload` to `{api_url}/{method}` with our token."""
        try:
            body = json_body(payload)
        except ValueError as exc:
            raise PermanentError(
                f"the message cannot be sent as JSON: {exc}", provider=self.name, code="not_json"
            ) from None
        url = f"{self.settings.api_url}/{method}"
        return await self.request("POST", url, content=body, headers=self._headers, limit=_READ)

    async def set_webhook(
        self, url: str, event_types: Sequence[str] = EVENT_TYPES, *, send_name: bool = True
    ) -> list[str]:
        """Register `url` as the bot's webhook (`""` removes it); the event types Viber
        confirmed. Viber first posts a signed `webhook` check there, which `receive()`
        answers 200; a refusal raises the classified error."""
        payload = {
            "url": url,
            "event_types": list(event_types),
            "send_name": send_name,
            "send_photo": False,
        }
        answer = await self.call("set_webhook", payload)
        data = _json(answer)
        if answer.ok and _status(data) == 0:
            assert data is not None
            types = data.get("event_types", [])
            return [t for t in types if isinstance(t, str)] if isinstance(types, list) else []
        raise self.classify(answer, data, None)

    def classify(
        self, answer: Answer, data: dict[str, Any] | None, delivery_id: str | None
    ) -> ProviderError:
        """The error an answer means, per §3.3."""
        status = _status(data)
        raw = f"HTTP {answer.status}: {answer.text()}"
        name = self.name
        if not answer.ok:
            return self.refusal(answer, raw)
        if status is None or status == 0:
            return PermanentError(
                f"an answer nobody classified: {raw}", provider=name, code="unclassified"
            )
        assert data is not None
        word = data.get("status_message")
        text = f"status {status}" + (f" {word[:200]}" if isinstance(word, str) else "")
        tag = str(status)
        if status in ACCOUNT:
            return PermanentError(text, provider=name, code=tag, account=True)
        if status in PERMANENT:
            return PermanentError(text, provider=name, code=tag)
        if status in UNREACHABLE:
            gone = "unsubscribed" if status == NOT_SUBSCRIBED else None
            return UnreachableError(text, provider=name, code=tag, gone=gone)
        if status == TOO_MANY:
            return TransientError(text, provider=name, code=tag)
        return self._general_error(text, tag, delivery_id)

    def _general_error(self, text: str, tag: str, delivery_id: str | None) -> ProviderError:
        """A status past the table: transient the first time for a delivery, permanent
        the second ("retry once", §3.3)."""
        if delivery_id is None or delivery_id in self._general:
            if delivery_id is not None:
                self._general.pop(delivery_id, None)
            return PermanentError(f"{text} (again)", provider=self.name, code=tag)
        self._general[delivery_id] = None
        while len(self._general) > _GENERAL_MEMORY:
            self._general.popitem(last=False)
        return TransientError(text, provider=self.name, code=tag)

    # in

    def deep_link(self, payload: str) -> str:
        """`viber://pa?chatURI=<uri>&context=<payload>`: opens the bot's chat; Viber
        sends `conversation_started` with the payload as `context`."""
        if not payload or len(payload) > 64:
            raise ValueError("a context payload is 1 to 64 characters")
        if not self.settings.uri:
            raise ValueError(
                f"provider {self.name!r} does not know its bot's URI: set `uri:` (from "
                "get_account_info) to make its deep links"
            )
        return f"viber://pa?chatURI={self.settings.uri}&context={payload}"

    async def receive(self, request: WebhookRequest) -> Inbound:
        """The receipts and signals of one signed callback."""
        self.check(request)
        return self.parse(request.body)

    def check(self, request: WebhookRequest) -> None:
        """`X-Viber-Content-Signature` over the raw body, in constant time."""
        given = request.headers.get("x-viber-content-signature", "")
        if not given:
            raise BadSignature("no X-Viber-Content-Signature header")
        if not same(given.strip().lower(), hmac_hex(self._key, request.body)):
            raise BadSignature("X-Viber-Content-Signature does not match")

    def parse(self, body: bytes) -> Inbound:
        """What a verified callback means; ValueError if malformed. Events that carry no
        news for a cascade (`webhook`, `message`, a start without context) bring nothing."""
        data = load_json(body)
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            raise ValueError("a callback must be a JSON object with an event")
        event: str = data["event"]
        ts = _millis(data.get("timestamp"), self.clock.now())
        kind = _RECEIPTS.get(event)
        if kind is not None:
            token = _token(data.get("message_token"))
            if token is None:
                raise ValueError("message_token must be a 64-bit integer")
            desc = data.get("desc")
            receipt = Receipt(
                provider=self.name,
                provider_message_id=token,
                status=kind,
                ts=ts,
                error=desc[:1000]
                if kind is ReceiptStatus.FAILED and isinstance(desc, str)
                else None,
            )
            return Inbound(receipts=[receipt])
        if event == "unsubscribed":
            user = _user_id(data.get("user_id"))
            return Inbound(signals=[self._signal(SignalKind.GONE, user, "unsubscribed", ts)])
        if event in _LINKING:
            context, user_data = data.get("context"), data.get("user")
            if isinstance(context, str) and 0 < len(context) <= _MAX_ID:
                user = _user_id(user_data.get("id") if isinstance(user_data, dict) else None)
                linked = self._signal(SignalKind.LINKED, user, event, ts, token=context)
                return Inbound(signals=[linked])
        return Inbound()

    def _signal(
        self,
        kind: SignalKind,
        address: str,
        reason: str,
        ts: float,
        token: str | None = None,
    ) -> Signal:
        return Signal(
            kind=kind,
            channel=self.channel,
            address=address,
            provider=self.name,
            reason=reason,
            ts=ts,
            token=token,
        )


def _json(answer: Answer) -> dict[str, Any] | None:
    try:
        data = answer.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _status(data: dict[str, Any] | None) -> int | None:
    status = data.get("status") if data is not None else None
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _token(value: object) -> str | None:
    """A message token as its exact decimal digits: an int, or digits in a string; never
    a float, which cannot hold 64 bits."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return value
    return None


def _user_id(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID:
        raise ValueError(f"the user id must be a string of 1 to {_MAX_ID} characters")
    return value


def _millis(value: object, now: float) -> float:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**14:
        return value / 1000
    return now


__all__ = ["ViberBotProvider", "ViberOverrides", "ViberSettings"]
