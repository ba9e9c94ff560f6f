"""`type: twilio_sms`: SMS through Twilio Programmable Messaging (providers.md section 4).

Out: `send()` POSTs a form to `{api_url}/2010-04-01/Accounts/{account_sid}/Messages.json`
with HTTP Basic auth (`account_sid:auth_token`): `To`, `From` or `MessagingServiceSid`,
`Body`, `StatusCallback` (the `public_url` setting) and `ValidityPeriod` (the seconds
left until the step's deadline, where that fits Twilio's 1 to 36,000). The `SM…` sid of
the 201 answer is the provider message id; the cost is the text's segments times
`price_per_segment` when a price is set (`sms/segments.py`).

Refusals are classified by Twilio's code first (`ERRORS`, section 4.4), then by the HTTP
status every API shares; a code nobody classified is permanent, with the answer's words.

In: Twilio POSTs a form to `StatusCallback` on each status change. `X-Twilio-Signature`
is base64 HMAC-SHA1 keyed with the auth token over `public_url` followed by every form
parameter, sorted by name, each name followed by its value (section 4.6): always over the
configured `public_url`, never the URL the app saw behind a proxy, accepting it with and
without the explicit default port as Twilio's own `RequestValidator` does. `sent` is a
`sent` receipt, `delivered` a `delivered` one, `undelivered`, `failed` and `canceled`
`failed` receipts carrying `ErrorCode` (30003, 30005 and 30006 mean the number cannot be
reached: the step fails at once and the cascade moves on, as for an unreachable error).
An incoming `STOP` posted to the same endpoint (`OptOutType=STOP`) is a `gone` signal.
"""

from __future__ import annotations

import base64
from typing import Annotated, ClassVar, Final, Literal, NamedTuple, Self
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
from pydantic import AfterValidator, Field, SecretStr, model_validator

from cascade_notify._duration import Duration
from cascade_notify._text import masked_url
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.models import Receipt, ReceiptStatus, Signal, SignalKind, WaitFor
from cascade_notify.providers._http import Answer, HttpProvider, form_body, retry_after
from cascade_notify.providers._signing import BadSignature, hmac_b64, same, wall_time
from cascade_notify.providers.base import (
    Inbound,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
)
from cascade_notify.providers.sms.pricing import SmsPricing

API_URL: Final = "https://api.twilio.com"
API_VERSION: Final = "2010-04-01"
#: Twilio's `ValidityPeriod` range, in seconds (36,000 is also its default).
VALIDITY_MIN: Final = 1
VALIDITY_MAX: Final = 36_000
MAX_BODY: Final = 1600
_MAX_CALLBACK: Final = 64 * 1024
_MAX_PARAMS: Final = 200
_SIGNATURE: Final = "x-twilio-signature"

Class = Literal["transient", "permanent", "account", "unreachable", "unsubscribed"]


class Code(NamedTuple):
    meaning: str
    kind: Class


#: Twilio's REST error codes and what they mean for the cascade (providers.md section 4.4).
ERRORS: Final[dict[int, Code]] = {
    20003: Code("authentication failed", "account"),
    20404: Code("resource not found (account sid or path)", "permanent"),
    20429: Code("too many concurrent requests", "transient"),
    21211: Code("invalid To number", "unreachable"),
    21408: Code("no permission to send to that region", "account"),
    21606: Code("From is not SMS-capable", "account"),
    21608: Code("trial account: To is not verified", "account"),
    21610: Code("the recipient unsubscribed (replied STOP)", "unsubscribed"),
    21611: Code("the sender's queue is full", "transient"),
    21612: Code("To is not routable from this sender", "unreachable"),
    21614: Code("To is not a valid mobile number", "unreachable"),
    21617: Code("Body is too long", "permanent"),
    21635: Code("To is a landline", "unreachable"),
    21658: Code("Body is too long", "permanent"),
}

#: What a status callback's `ErrorCode` means (the error text when Twilio sends none).
DELIVERY_ERRORS: Final[dict[str, str]] = {
    "30001": "queue overflow: queued longer than the validity period",
    "30002": "account suspended",
    "30003": "unreachable handset (off, no signal, cannot take SMS)",
    "30004": "message blocked",
    "30005": "unknown destination handset (the number does not exist)",
    "30006": "landline or unreachable carrier",
    "30007": "filtered by the carrier",
    "30008": "unknown error",
}

#: `MessageStatus` values that are receipts; the others (accepted, scheduled, queued,
#: sending) are Twilio's own steps, acknowledged and not recorded.
STATUSES: Final[dict[str, ReceiptStatus]] = {
    "sent": ReceiptStatus.SENT,
    "delivered": ReceiptStatus.DELIVERED,
    "partially_delivered": ReceiptStatus.DELIVERED,
    "read": ReceiptStatus.READ,
    "undelivered": ReceiptStatus.FAILED,
    "failed": ReceiptStatus.FAILED,
    "canceled": ReceiptStatus.FAILED,
}


def _check_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise ValueError(f"{masked_url(url)!r} is not a URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{masked_url(url)!r} is not an http:// or https:// URL")
    return url


Url = Annotated[str, AfterValidator(_check_url)]


class TwilioSettings(SmsPricing):
    """Settings of `type: twilio_sms`: exactly one of `from_number` and
    `messaging_service_sid`; `public_url` is this provider's receipts endpoint as Twilio
    reaches it (without it no status callback is asked for, and only `accepted` can be
    waited for)."""

    account_sid: str = Field(
        pattern=r"^AC[0-9a-fA-F]{32}$",
        description="The Twilio account SID (`AC...`); with `auth_token`, the HTTP Basic "
        "credentials.",
    )
    auth_token: SecretStr = Field(
        description="The account's auth token; it also keys the status callbacks' signatures."
    )
    from_number: str | None = Field(
        default=None,
        min_length=1,
        description="The sender (`From`): a number in E.164 or a sender id Twilio allows; give "
        "this or `messaging_service_sid`.",
    )
    messaging_service_sid: str | None = Field(
        default=None,
        pattern=r"^MG[0-9a-fA-F]{32}$",
        description="A Messaging Service (`MG...`) that picks the sender; give this or "
        "`from_number`.",
    )
    api_url: Url = Field(
        default=API_URL, description="The Twilio API root (an emulator's in tests)."
    )
    public_url: Url | None = Field(
        default=None,
        description="This provider's receipts endpoint as Twilio reaches it: sent as "
        "`StatusCallback` and the URL signatures are checked over. `null`: no "
        "callbacks, so only `accepted` can be waited for.",
    )
    timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="How long one API call may take before it counts as a timeout (transient, "
        "or an unknown outcome once the request went out).",
    )

    @model_validator(mode="after")
    def _one_sender(self) -> Self:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("give exactly one of from_number and messaging_service_sid")
        return self


class TwilioSmsProvider(HttpProvider):
    """`type: twilio_sms`: one Messages API call per send; status callbacks as receipts."""

    type_name = "twilio_sms"
    default_channel = "sms"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(
        {ReceiptStatus.SENT, ReceiptStatus.DELIVERED, ReceiptStatus.FAILED}
    )
    max_length = MAX_BODY
    signals: ClassVar[bool] = True
    webhook_methods = frozenset({"POST"})
    Settings = TwilioSettings
    settings: TwilioSettings

    @classmethod
    def can_satisfy(cls, wait_for: WaitFor, settings: ProviderSettings | None = None) -> bool:
        """Without a `public_url` Twilio is never asked for callbacks: `accepted` only."""
        if isinstance(settings, TwilioSettings) and settings.public_url is None:
            return wait_for is WaitFor.ACCEPTED
        return super().can_satisfy(wait_for, settings)

    @property
    def messages_url(self) -> str:
        root = self.settings.api_url.rstrip("/")
        return f"{root}/{API_VERSION}/Accounts/{self.settings.account_sid}/Messages.json"

    # out

    def form(self, request: SendRequest) -> list[tuple[str, str]]:
        """The form fields of one send."""
        settings = self.settings
        fields = [("To", request.address), ("Body", request.text)]
        if settings.messaging_service_sid is not None:
            fields.append(("MessagingServiceSid", settings.messaging_service_sid))
        else:
            assert settings.from_number is not None
            fields.append(("From", settings.from_number))
        if settings.public_url is not None:
            fields.append(("StatusCallback", settings.public_url))
        validity = self.validity(request.deadline_ts)
        if validity is not None:
            fields.append(("ValidityPeriod", str(validity)))
        return fields

    def validity(self, deadline_ts: float | None) -> int | None:
        """`ValidityPeriod` for a step ending at `deadline_ts`: the whole seconds left, at
        least 1; None (Twilio's default, its maximum) when more than 36,000 are left."""
        if deadline_ts is None:
            return None
        left = int(deadline_ts - self.clock.now())
        if left > VALIDITY_MAX:
            return None
        return max(VALIDITY_MIN, left)

    async def send(self, request: SendRequest) -> SendResult:
        """Create the message; its `SM…` sid is the provider message id."""
        credentials = f"{self.settings.account_sid}:{self.settings.auth_token.get_secret_value()}"
        headers = {
            "authorization": "Basic " + base64.b64encode(credentials.encode()).decode("ascii"),
            "content-type": "application/x-www-form-urlencoded",
            "accept": "application/json",
        }
        answer = await self.request(
            "POST", self.messages_url, content=form_body(self.form(request)), headers=headers
        )
        if not answer.ok:
            raise self.refused(answer)
        try:
            data = answer.json()
            sid = data["sid"]
        except (ValueError, KeyError, TypeError):
            sid = None
        if not isinstance(sid, str) or not sid:
            # a 2xx means Twilio took it: resending could send it twice
            raise UnknownOutcomeError(
                f"HTTP {answer.status} without a message sid: {answer.text()}",
                provider=self.name,
                code="no_sid",
            )
        return SendResult(sid, self.settings.estimate(request.text))

    def refused(self, answer: Answer) -> ProviderError:
        """The error for a refusal: by Twilio's code (section 4.4), then by HTTP status."""
        code, words = _error(answer)
        known = ERRORS.get(code) if code is not None else None
        text = f"HTTP {answer.status}: {words or answer.text()}"
        tag = str(code) if code is not None else None
        if known is None:
            return self.refusal(answer, text, tag)
        name = self.name
        if known.kind == "transient":
            wait = retry_after(answer.headers.get("retry-after"), wall_time())
            return TransientError(text, provider=name, code=tag, retry_after=wait)
        if known.kind == "unsubscribed":
            return UnreachableError(text, provider=name, code=tag, gone="unsubscribed")
        if known.kind == "unreachable":
            return UnreachableError(text, provider=name, code=tag)
        return PermanentError(text, provider=name, code=tag, account=known.kind == "account")

    # in

    async def receive(self, request: WebhookRequest) -> Inbound:
        """A status callback: verified over `public_url` and its form, then one receipt (or
        none for Twilio's own steps)."""
        params = self.verify(request)
        fields = dict(params)
        if "MessageStatus" not in fields and fields.get("SmsStatus") == "received":
            return Inbound(signals=self.opt_out(fields))
        receipt = self.receipt(params)
        return Inbound(receipts=[] if receipt is None else [receipt])

    def opt_out(self, fields: dict[str, str]) -> list[Signal]:
        """An incoming message posted to this endpoint: a STOP (Twilio's `OptOutType`) means
        the number is unsubscribed from this sender, and later cascades skip it."""
        sender = fields.get("From")
        if fields.get("OptOutType", "").upper() != "STOP" or not sender:
            return []
        return [
            Signal(
                kind=SignalKind.GONE,
                channel=self.channel,
                address=sender,
                provider=self.name,
                reason="unsubscribed",
                ts=self.clock.now(),
            )
        ]

    def verify(self, request: WebhookRequest) -> list[tuple[str, str]]:
        """The callback's form parameters, once `X-Twilio-Signature` matches; raise
        `BadSignature` (403, as Twilio's docs answer it) saying why not."""
        public_url = self.settings.public_url
        if public_url is None:
            raise BadSignature("no public_url is configured to verify against", status=403)
        given = request.headers.get(_SIGNATURE, "")
        if not given:
            raise BadSignature("no X-Twilio-Signature header", status=403)
        if len(request.body) > _MAX_CALLBACK:
            raise BadSignature("the body is too large to be a status callback", status=403)
        try:
            text = request.body.decode("utf-8")
            params = parse_qsl(
                text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=_MAX_PARAMS
            )
        except ValueError:
            raise BadSignature("the body is not a form Twilio signed", status=403) from None
        token = self.settings.auth_token.get_secret_value().encode("utf-8")
        for url in url_variants(public_url):
            if same(given.strip(), signature(token, url, params)):
                return params
        raise BadSignature("X-Twilio-Signature does not match", status=403)

    def receipt(self, params: list[tuple[str, str]]) -> Receipt | None:
        """The receipt a verified callback's parameters report; ValueError if malformed."""
        fields = dict(params)
        sid = fields.get("MessageSid") or fields.get("SmsSid")
        status = fields.get("MessageStatus") or fields.get("SmsStatus")
        if not sid or not status:
            raise ValueError("a status callback needs MessageSid and MessageStatus")
        kind = STATUSES.get(status)
        if kind is None:
            return None
        code = fields.get("ErrorCode") or None
        error = fields.get("ErrorMessage") or None
        if kind is ReceiptStatus.FAILED:
            error = error or DELIVERY_ERRORS.get(code or "") or status
        return Receipt(
            provider=self.name,
            provider_message_id=sid,
            status=kind,
            ts=self.clock.now(),
            code=code,
            error=error if kind is ReceiptStatus.FAILED else None,
            receipt_id=f"{sid}:{status}",
        )


def signature(token: bytes, url: str, params: list[tuple[str, str]]) -> str:
    """`X-Twilio-Signature` for a form posted to `url` (section 4.6): base64 HMAC-SHA1 of the
    URL followed by each name and value, names sorted and, for a repeated name, its
    distinct values sorted (as twilio-python computes it)."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    return hmac_b64(token, data.encode("utf-8"), "sha1")


def url_variants(url: str) -> list[str]:
    """`url` as given, and with its default port added or removed (Twilio signs either)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return [url]
    if default is None or port not in (None, default):
        return [url]
    netloc = f"{parts.netloc}:{default}" if port is None else parts.netloc.rpartition(":")[0]
    return [url, urlunsplit(parts._replace(netloc=netloc))]


def _error(answer: Answer) -> tuple[int | None, str | None]:
    """Twilio's code and message from a refusal: the 2010 envelope (`code`, `message`) or
    an RFC 9457 body (`code`, `title`, `detail`)."""
    try:
        data = answer.json()
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    code = data.get("code")
    words = data.get("message") or data.get("detail") or data.get("title")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        words[:300] if isinstance(words, str) else None,
    )


__all__ = [
    "DELIVERY_ERRORS",
    "ERRORS",
    "STATUSES",
    "TwilioSettings",
    "TwilioSmsProvider",
    "signature",
    "url_variants",
]
