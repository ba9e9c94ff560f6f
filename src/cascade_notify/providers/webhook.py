"""`type: webhook`: the company's own app or site as a channel, signed the Standard Webhooks way.

Out: `send()` POSTs the message as JSON to the company's `url` with the headers
`webhook-id` (our attempt id, also the body's `message_id`), `webhook-timestamp`
(Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`,
one signature per configured secret, space-separated, so the company can rotate its
secret without a gap. A 2xx answer means accepted.

In: the company's app POSTs signed receipts (`{"message_id", "status", "timestamp",
"error"}`, or a list of them) to `{prefix}/{provider name}`; `verify()` checks them the
same way, within `tolerance` of the notifier's clock, and `parse()` turns them into
`Receipt`s whose `receipt_id` is the `webhook-id`, so a replay changes nothing.

`idempotent_sends = True`: a resend after a crash carries the same `webhook-id`, and a
Standard Webhooks receiver must de-duplicate on it (docs/webhooks.md says so to the
company), so resending cannot show the message twice.

Transport failures are classified by what happened, in `_translate` alone: nothing
written yet (refused, DNS, reset while connecting, connect timeout) is a
`TransientError`; anything after the request may have been written (read timeout,
server hung up, protocol error) is an `UnknownOutcomeError`. The default transport is
aiohttp's, through httpx-aiohttp, whose own mapping calls a server hang-up a "connect
timeout"; so `_translate` reads the aiohttp exception underneath, never the httpx class
put over it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import hashlib
import hmac
import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

import aiohttp
import httpx
from pydantic import AfterValidator, BeforeValidator, Field, SecretStr

from cascade_notify._duration import Duration
from cascade_notify._text import masked_url
from cascade_notify.clock import Clock
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.models import Receipt, ReceiptStatus
from cascade_notify.providers.base import (
    MalformedReceipts,
    Provider,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
)

_KEY_PREFIX = "whsec_"
_MIN_KEY_BYTES = 24  # the Standard Webhooks spec asks for 24 to 64 random bytes
_MAX_ID = 256
_MAX_RECEIPTS = 1000
_MAX_SIGNATURES = 16
_MAX_ERROR = 1000
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() also takes "١٢" and "1_0"
_STATUSES = {
    "delivered": ReceiptStatus.DELIVERED,
    "read": ReceiptStatus.READ,
    "failed": ReceiptStatus.FAILED,
}
_USER_AGENT = "cascade-notify (+https://github.com/cascade-notify)"
# Most servers drop idle keep-alive connections after 5 s or more; a POST on one they
# are closing ends as "server disconnected", an unknown outcome, so idle ones go first.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=4.0)


def decode_secret(value: str) -> bytes:
    """The HMAC key in a `whsec_<base64>` secret; ValueError (never echoing it) if malformed."""
    if not value.startswith(_KEY_PREFIX):
        raise ValueError("a webhook secret must be whsec_ followed by the key in base64")
    encoded = value[len(_KEY_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("the part after whsec_ is not valid base64") from None
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(
            f"the key is {len(key)} bytes; Standard Webhooks asks for 24 to 64 random bytes"
        )
    return key


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str | SecretStr) else value


def _check_secrets(secrets: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
    for secret in secrets:
        decode_secret(secret.get_secret_value())
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

    url: Annotated[str, AfterValidator(_check_url)]
    secret: Annotated[
        tuple[SecretStr, ...],
        BeforeValidator(_as_list),
        Field(min_length=1),
        AfterValidator(_check_secrets),
    ]
    timeout: Duration = Field(default=10.0, gt=0)
    tolerance: Duration = Field(default=300.0, gt=0)
    channel: str = Field(default="app", min_length=1)


class WebhookProvider(Provider):
    """`type: webhook`: POSTs the message to the company's app; takes its receipts back.

    Pass `client=` (an `httpx.AsyncClient`, e.g. on a `MockTransport`) to replace the
    default aiohttp-backed client; an injected client is the caller's to close.
    """

    type_name = "webhook"
    default_channel = "app"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(ReceiptStatus)
    idempotent_sends = True
    accepts_webhooks = True
    Settings = WebhookSettings
    settings: WebhookSettings

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        *,
        clock: Clock | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(name, settings, clock=clock)
        self._keys = tuple(decode_secret(s.get_secret_value()) for s in self.settings.secret)
        self._client = client
        self._owns_client = client is None
        self._direct: httpx.AsyncBaseTransport | None = None
        self._url = httpx.URL(self.settings.url)
        self._timeout = httpx.Timeout(self.settings.timeout)
        self._timeout_extension = {"timeout": self._timeout.as_dict()}
        self._aiohttp: aiohttp.ClientSession | None = None
        self._aiohttp_known = False  # whether `_session` has decided for this client
        self._url_text = str(self._url)
        # each phase as the httpx-aiohttp transport maps httpx's timeouts
        self._aiohttp_timeout = aiohttp.ClientTimeout(
            sock_connect=self._timeout.connect,
            sock_read=self._timeout.read,
            connect=self._timeout.pool,
        )

    # out

    def signature(self, webhook_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` value: `v1,<base64>` for each secret, space-separated."""
        signed = _signed_content(webhook_id, str(timestamp), body)
        return " ".join(
            "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
            for key in self._keys
        )

    def signed_headers(
        self, webhook_id: str, body: bytes, timestamp: int | None = None
    ) -> dict[str, str]:
        """The three Standard Webhooks headers for `body`, stamped now by default."""
        stamp = int(self.clock.now()) if timestamp is None else timestamp
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": self.signature(webhook_id, stamp, body),
        }

    async def send(self, request: SendRequest) -> SendResult:
        """POST the message to `url`, signed; a 2xx answer means accepted."""
        now = self.clock.now()
        body = self._body(request, now)
        headers = {
            "content-type": "application/json",
            "user-agent": _USER_AGENT,
            **self.signed_headers(request.attempt_id, body, int(now)),
        }
        try:
            # each phase is bounded by `timeout`; this bounds a server that trickles bytes
            async with asyncio.timeout(2 * self.settings.timeout):
                session = self._session()
                if session is not None:
                    async with session.post(
                        self._url_text,
                        data=body,
                        headers=headers,
                        allow_redirects=False,
                        compress=False,
                        timeout=self._aiohttp_timeout,
                    ) as answer:
                        # read (a little) even on success, so the connection can be reused
                        detail = await _read_some_aiohttp(answer)
                        if 200 <= answer.status < 300:
                            return SendResult(request.attempt_id)
                        status, retry_after = answer.status, answer.headers.get("retry-after")
                    raise self._refusal(status, retry_after, detail)
                transport = self._transport()
                if transport is None:
                    async with self._http().stream(
                        "POST", self._url, content=body, headers=headers, timeout=self._timeout
                    ) as response:
                        # read (a little) even on success, so the connection can be reused
                        detail = await _read_some(response)
                else:
                    out = httpx.Request(
                        "POST",
                        self._url,
                        content=body,
                        headers=headers,
                        extensions=self._timeout_extension,
                    )
                    response = await transport.handle_async_request(out)
                    try:
                        detail = await _read_some(response)
                    finally:
                        await response.aclose()
                if response.is_success:
                    return SendResult(request.attempt_id)
        except ProviderError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc
        raise self._refusal(response.status_code, response.headers.get("retry-after"), detail)

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
            "options": {k: v for k, v in request.overrides.items() if k != "text"},
            "timestamp": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        }
        try:
            text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise PermanentError(
                f"the message cannot be sent as JSON: {exc}", provider=self.name, code="not_json"
            ) from exc
        return text.encode()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # imported here: only a provider that really sends needs aiohttp's client
            from httpx_aiohttp import HttpxAiohttpClient

            self._client = HttpxAiohttpClient(
                timeout=httpx.Timeout(self.settings.timeout),
                limits=_LIMITS,
                follow_redirects=False,
            )
        return self._client

    def _session(self) -> aiohttp.ClientSession | None:
        """The aiohttp session under our own client's transport for `url`, to post on it
        without httpx's request and response objects (a quarter of the work per message);
        None for an injected client, or a proxy or socket the transport would apply."""
        if not self._aiohttp_known:
            from httpx_aiohttp.transport import AiohttpTransport

            transport = self._transport()
            if (
                isinstance(transport, AiohttpTransport)
                and transport.proxy is None
                and transport.uds is None
            ):
                if not isinstance(transport.client, aiohttp.ClientSession):
                    transport.client = transport.get_client()
                self._aiohttp = transport.client
            self._aiohttp_known = True
        return self._aiohttp

    def _transport(self) -> httpx.AsyncBaseTransport | None:
        """The transport our own client would post to `url` on (its pool, or the proxy the
        environment names), to post on it directly; None for an injected client, which
        gets every request. The client's own per-request work (merging URLs and headers,
        the cookie jar, auth and redirect hooks: nothing a webhook uses) costs more CPU
        than the aiohttp request itself and would halve the messages a core sends."""
        if self._direct is None:
            client = self._http()
            pick = getattr(client, "_transport_for_url", None) if self._owns_client else None
            if pick is None:
                return None
            self._direct = pick(self._url)
        return self._direct

    def _translate(self, exc: BaseException) -> ProviderError:
        """The one place a transport's exception becomes ours, by what actually happened."""
        name, text = self.name, f"{type(exc).__name__}: {exc}".rstrip(": ")
        cause = _aiohttp_cause(exc)
        if cause is not None:
            # aiohttp raises these only while connecting: no byte of the request went out
            if isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
                return TransientError(f"cannot connect: {cause}", provider=name, code="connect")
            if isinstance(cause, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
                return PermanentError(f"bad url: {cause}", provider=name, code="url")
            return UnknownOutcomeError(
                f"the request may have reached the app: {type(cause).__name__}: {cause}",
                provider=name,
                code="after_send",
            )
        if isinstance(
            exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.ProxyError
        ):
            return TransientError(f"cannot connect: {text}", provider=name, code="connect")
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL | httpx.LocalProtocolError):
            return PermanentError(f"the request cannot be made: {text}", provider=name, code="url")
        # read/write timeouts and errors, a protocol error, our overall deadline, the rest
        return UnknownOutcomeError(
            f"the request may have reached the app: {text}", provider=name, code="after_send"
        )

    def _refusal(self, status: int, retry_after: str | None, detail: bytes) -> ProviderError:
        error, code = _error_detail(detail)
        message = f"HTTP {status}" + (f": {error}" if error else "")
        code = code or str(status)
        if status == 429 or status >= 500 or status == 408:
            after = _retry_after(retry_after, self.clock.now())
            return TransientError(message, provider=self.name, code=code, retry_after=after)
        if status == 410:
            return UnreachableError(message, provider=self.name, code=code)
        if status < 400:
            message += " (redirects are not followed; set url: to the final address)"
        return PermanentError(message, provider=self.name, code=code, account=status in (401, 403))

    async def aclose(self) -> None:
        """Close the HTTP client if the provider made it (an injected one is the caller's)."""
        if self._owns_client and self._client is not None:
            client, self._client, self._direct, self._aiohttp = self._client, None, None, None
            self._aiohttp_known = False
            await client.aclose()

    # in

    def verify(self, request: WebhookRequest) -> bool:
        """Whether any `v1` signature matches a secret's, within `tolerance` (constant time)."""
        headers = request.headers
        webhook_id = headers.get("webhook-id", "")
        stamp = headers.get("webhook-timestamp", "")
        given = headers.get("webhook-signature", "")
        if not 0 < len(webhook_id) <= _MAX_ID or not _TIMESTAMP.fullmatch(stamp):
            return False
        if abs(self.clock.now() - int(stamp)) > self.settings.tolerance:
            return False
        signed = _signed_content(webhook_id, stamp, request.body)
        expected = [hmac.new(key, signed, hashlib.sha256).digest() for key in self._keys]
        for part in given.split()[:_MAX_SIGNATURES]:
            # a repeated header arrives joined with ", " (RFC 9110): "v1,AAA=, v1,BBB="
            version, _, encoded = part.removesuffix(",").partition(",")
            if version != "v1" or not encoded.isascii():
                continue
            try:
                candidate = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                continue
            for digest in expected:
                if hmac.compare_digest(candidate, digest):
                    return True
        return False

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


def load_json(body: bytes) -> Any:
    """The one JSON parser receipts go through: strict UTF-8, no NaN, depth-safe."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _header_bytes(value: str) -> bytes:
    # ASGI servers hand header bytes over as latin-1 text; a framework that decoded
    # them as UTF-8 gives text latin-1 cannot hold, which is UTF-8 on the wire
    # (surrogatepass: hostile text with lone surrogates fails to verify, never raises)
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def _signed_content(webhook_id: str, stamp: str, body: bytes) -> bytes:
    return _header_bytes(webhook_id) + b"." + stamp.encode("ascii") + b"." + body


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


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) <= 9:
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


async def _read_some(response: httpx.Response, limit: int = 4096) -> bytes:
    # best effort: the status already says what happened, the body only adds words (to a
    # refusal; a 2xx body is only read so the connection can be reused, so not decoded)
    data = bytearray()
    chunks = response.aiter_raw() if response.is_success else response.aiter_bytes()
    try:
        async for chunk in chunks:
            data += chunk
            if len(data) >= limit:
                break
    except Exception:
        return bytes(data[:limit])
    return bytes(data[:limit])


async def _read_some_aiohttp(answer: aiohttp.ClientResponse, limit: int = 4096) -> bytes:
    # as `_read_some`, on aiohttp's own response
    data = bytearray()
    with contextlib.suppress(Exception):
        while len(data) < limit:
            chunk = await answer.content.read(limit - len(data))
            if not chunk:
                break
            data += chunk
    return bytes(data)


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


def _aiohttp_cause(exc: BaseException) -> aiohttp.ClientError | None:
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return None
        if isinstance(current, aiohttp.ClientError):
            return current
        current = current.__cause__
    return None


__all__ = ["WebhookProvider", "WebhookSettings", "decode_secret", "load_json"]
