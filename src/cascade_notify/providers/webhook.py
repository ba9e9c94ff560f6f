"""`type: webhook`: the company's own app or site as a channel, signed the Standard Webhooks way.

Out: `send()` POSTs the message as JSON to the company's `url` with the headers
`webhook-id` (our attempt id, also the body's `message_id`), `webhook-timestamp`
(Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`,
one signature per configured secret, space-separated, so the company can rotate its
secret without a gap. A 2xx answer means accepted.

In: the company's app POSTs signed receipts (`{"message_id", "status", "timestamp",
"error"}`, or a list of them) to `{prefix}/{provider name}`; `verify()` checks them the
same way, within `tolerance` of wall-clock time (never the injected clock), and
`receive()` turns them into `Receipt`s whose `receipt_id` is the `webhook-id`, so a
replay changes nothing.

`idempotent_sends = True`: a resend after a crash carries the same `webhook-id`, and a
Standard Webhooks receiver must de-duplicate on it (docs/webhooks.md says so to the
company), so resending cannot show the message twice.

The client, the transport and the translation of transport failures are the shared
HTTP base's (`providers/_http.py`); signing is `providers/_signing.py`'s.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, ClassVar

import httpx
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, SecretStr

from cascade_notify._duration import Duration
from cascade_notify._text import masked_url
from cascade_notify.clock import Clock
from cascade_notify.errors import PermanentError, ProviderError, UnreachableError
from cascade_notify.models import Receipt, ReceiptStatus
from cascade_notify.providers._http import Answer, HttpClient, HttpProvider, load_json
from cascade_notify.providers._signing import StandardWebhooks, decode_whsec
from cascade_notify.providers.base import (
    Inbound,
    MalformedReceipts,
    ProviderOverrides,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
)

_MAX_ID = 256
_MAX_RECEIPTS = 1000
_MAX_ERROR = 1000
_STATUSES = {
    "delivered": ReceiptStatus.DELIVERED,
    "read": ReceiptStatus.READ,
    "failed": ReceiptStatus.FAILED,
}
# a 2xx body is read only so the connection can be reused; a refusal's for its words
_READ = 4096

#: Kept under its old name: the HMAC key in a `whsec_<base64>` secret.
decode_secret = decode_whsec


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str | SecretStr) else value


def _check_secrets(secrets: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
    for secret in secrets:
        decode_whsec(secret.get_secret_value())
    return secrets


def _check_url(url: str) -> str:
    # (the URL may hold a password or a token: the error shows it masked)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise ValueError(f"{masked_url(url)!r} is not a URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{masked_url(url)!r} is not an http:// or https:// URL")
    return url


class WebhookSettings(ProviderSettings):
    """Settings of `type: webhook`. `secret` is one `whsec_` secret or a list (rotation)."""

    url: Annotated[str, AfterValidator(_check_url)] = Field(
        description="Where the messages are POSTed (http or https), signed the Standard "
        "Webhooks way."
    )
    secret: Annotated[
        tuple[SecretStr, ...],
        BeforeValidator(_as_list),
        Field(min_length=1),
        AfterValidator(_check_secrets),
    ] = Field(
        description="The `whsec_...` secret that signs requests both ways; a list signs with "
        "each and accepts any (rotation)."
    )
    timeout: Duration = Field(
        default=10.0, gt=0, description="How long the POST to `url` may take."
    )
    tolerance: Duration = Field(
        default=300.0,
        gt=0,
        description="How far a receipt's `webhook-timestamp` may be from wall-clock time "
        "before it is refused.",
    )
    channel: str = Field(
        default="app", min_length=1, description="The channel this app takes messages on."
    )


class WebhookOverrides(ProviderOverrides):
    """`Message.overrides[channel]` for `type: webhook`: `text`, and any other keys,
    passed on to the app as the body's `options`."""

    model_config = ConfigDict(extra="allow", frozen=True)


class WebhookProvider(HttpProvider):
    """`type: webhook`: POSTs the message to the company's app; takes its receipts back.

    Pass `client=` (an `httpx.AsyncClient`, e.g. on a `MockTransport`) to replace the
    default aiohttp client; an injected client is the caller's to close.
    """

    type_name = "webhook"
    default_channel = "app"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(ReceiptStatus)
    idempotent_sends = True
    webhook_methods = frozenset({"POST"})
    Settings = WebhookSettings
    Overrides = WebhookOverrides
    settings: WebhookSettings

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
        self._signer = StandardWebhooks(
            [decode_whsec(s.get_secret_value()) for s in self.settings.secret],
            tolerance=self.settings.tolerance,
        )
        self._url = str(httpx.URL(self.settings.url))

    # out

    def signature(self, webhook_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` value: `v1,<base64>` for each secret, space-separated."""
        return self._signer.signature(webhook_id, timestamp, body)

    def signed_headers(
        self, webhook_id: str, body: bytes, timestamp: int | None = None
    ) -> dict[str, str]:
        """The three Standard Webhooks headers for `body`, stamped with wall-clock time by
        default (never the injected clock: the app verifies against its own)."""
        return self._signer.sign(webhook_id, body, timestamp)

    async def send(self, request: SendRequest) -> SendResult:
        """POST the message to `url`, signed; a 2xx answer means accepted."""
        body = self._body(request, self.clock.now())
        headers = {
            "content-type": "application/json",
            **self._signer.sign(request.attempt_id, body),
        }
        answer = await self.request("POST", self._url, content=body, headers=headers, limit=_READ)
        if answer.ok:
            return SendResult(request.attempt_id)
        raise self._refused(answer)

    def _body(self, request: SendRequest, now: float) -> bytes:
        message = request.message
        payload = {
            "type": "message",
            "message_id": request.attempt_id,
            "delivery_id": request.delivery_id,
            "channel": request.channel,
            "recipient": {
                "id": request.recipient.id,
                "address": request.address,
                "locale": request.recipient.locale,
            },
            "text": request.text,
            "subject": message.subject,
            "category": message.category,
            "metadata": dict(message.metadata),
            "options": request.overrides.model_dump(exclude={"text"}),
            "timestamp": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        }
        try:
            text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise PermanentError(
                f"the message cannot be sent as JSON: {exc}", provider=self.name, code="not_json"
            ) from exc
        return text.encode("utf-8", "surrogatepass")

    def _refused(self, answer: Answer) -> ProviderError:
        error, code = _error_detail(answer.body)
        message = f"HTTP {answer.status}" + (f": {error}" if error else "")
        if answer.status == 410:
            return UnreachableError(message, provider=self.name, code=code or "410")
        return self.refusal(answer, message, code)

    # in

    async def receive(self, request: WebhookRequest) -> Inbound:
        """Receipts from a request signed with one of our secrets within `tolerance` of wall
        time; `BadSignature` (with the reason) before the body is read otherwise."""
        self.check(request)
        return Inbound(receipts=self.parse(request))

    def check(self, request: WebhookRequest) -> str:
        """The request's `webhook-id` if a `v1` signature matches a secret's (constant time);
        raise `BadSignature` saying why not."""
        return self._signer.verify(request.headers, request.body)

    def parse(self, request: WebhookRequest) -> list[Receipt]:
        """Receipts from a verified body: one object or a list; ValueError if malformed."""
        data = load_json(request.body)
        items = data if isinstance(data, list) else [data]
        if not items:
            raise ValueError("an empty list holds no receipt")
        if len(items) > _MAX_RECEIPTS:
            raise ValueError(f"at most {_MAX_RECEIPTS} receipts per request")
        webhook_id = request.headers.get("webhook-id", "")
        now = self.clock.now()
        if not isinstance(data, list):
            return [self._receipt(data, webhook_id, now)]
        good: list[Receipt] = []
        bad: list[str] = []
        for i, item in enumerate(items):
            try:
                good.append(self._receipt(item, f"{webhook_id}:{i}", now))
            except ValueError as exc:
                bad.append(f"receipt {i}: {exc}")
        if not bad:
            return good
        if not good:
            raise ValueError(bad[0] if len(bad) == 1 else "; ".join(bad[:5]))
        # the good ones of a batch are recorded all the same (the 400 says which were not)
        raise MalformedReceipts("; ".join(bad[:5]), good)

    def _receipt(self, item: object, receipt_id: str, now: float) -> Receipt:
        if not isinstance(item, dict):
            raise ValueError("a receipt must be a JSON object")
        message_id = item.get("message_id")
        if not isinstance(message_id, str) or not 0 < len(message_id) <= _MAX_ID:
            raise ValueError(f"message_id must be a string of 1 to {_MAX_ID} characters")
        if not message_id.isprintable():  # our own ids are: NUL, a surrogate, are not ours
            raise ValueError("message_id must be printable text")
        status = item.get("status")
        if not isinstance(status, str) or status not in _STATUSES:
            raise ValueError(f"status must be one of {', '.join(_STATUSES)}")
        error, code = item.get("error"), item.get("code")
        if error is not None and not isinstance(error, str):
            raise ValueError("error must be a string or null")
        if code is not None and (isinstance(code, bool) or not isinstance(code, str | int)):
            raise ValueError("code must be a string, a number or null")
        return Receipt(
            provider=self.name,
            provider_message_id=message_id,
            status=_STATUSES[status],
            ts=_timestamp(item.get("timestamp"), now),
            code=None if code is None else str(code)[:_MAX_ID],
            error=None if error is None else error[:_MAX_ERROR],
            receipt_id=receipt_id,
        )


def _timestamp(value: object, now: float) -> float:
    if value is None:
        return now
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("timestamp must be RFC 3339 text or Unix seconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    else:
        raise ValueError("timestamp must be RFC 3339 text or Unix seconds")
    if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
        raise ValueError("timestamp is out of range")
    return seconds


def _error_detail(detail: bytes) -> tuple[str | None, str | None]:
    """`error` and `code` from a refusal's body: its JSON fields, or its first line of text."""
    try:
        data = json.loads(detail.decode("utf-8"))
    except (ValueError, RecursionError):
        text = detail.decode("utf-8", "replace").strip().splitlines()
        return (text[0][:200] if text else None), None
    if not isinstance(data, dict):
        return None, None
    error, code = data.get("error"), data.get("code")
    return (
        error[:200] if isinstance(error, str) else None,
        str(code)[:64] if isinstance(code, str | int) and not isinstance(code, bool) else None,
    )


__all__ = ["WebhookOverrides", "WebhookProvider", "WebhookSettings", "decode_secret", "load_json"]
