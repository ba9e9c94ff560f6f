"""`type: smsru`: SMS through SMS.ru (providers.md section 5).

Out: `send()` POSTs a form to `{api_url}/sms/send` with `api_id`, `to` (the number's
digits, no `+`), `msg`, `json=1` and `from` (the `sender` setting). SMS.ru answers HTTP 200
whatever happened: the outcome is in `status_code`, once for the request and once per
number (section 5.3, `CODES`); the number's `sms_id` is the provider message id. Any other
HTTP status is taken as the shared HTTP classes say (5xx transient).

In, two ways, both ending in the same receipts:

- the delivery callback: SMS.ru POSTs a form with `data[]` (each element one event,
  `sms_status\\n<sms_id>\\n<status_code>\\n<unix time>`) and `hash`, the hex SHA-256 of
  `api_id` followed by every `data[]` element in order. It is checked in constant time
  and answered with the plain body `100` (anything else makes SMS.ru send it again);
- polling `sms/status` (the `poll_interval` setting; `null` to rely on the callback
  alone) with up to `poll_batch` ids per call.

A receipt's id is `<sms_id>:<status_code>`, so a status learned by both ways is recorded
once. The price a status answer reports (`cost`) travels on its receipt and becomes the
attempt's cost, over segments times `price_per_segment`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Final, Literal, NamedTuple
from urllib.parse import parse_qsl

from pydantic import Field, SecretStr

from cascade_notify._duration import Duration
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.models import Receipt, ReceiptStatus
from cascade_notify.providers._http import Answer, HttpProvider, form_body
from cascade_notify.providers._signing import BadSignature, same, sha256_hex
from cascade_notify.providers.base import (
    Inbound,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
    WebhookResponse,
)
from cascade_notify.providers.sms.pricing import SmsPricing
from cascade_notify.providers.sms.twilio import Url

API_URL: Final = "https://sms.ru"
#: SMS.ru refuses a text of more than 8 SMS (code 205).
MAX_SEGMENTS: Final = 8
#: Ids asked about per `sms/status` call (SMS.ru takes a comma list; 100 keeps the URL short).
STATUS_BATCH: Final = 100
_MAX_CALLBACK: Final = 256 * 1024
_MAX_EVENTS: Final = 1000

Class = Literal["transient", "permanent", "account", "unreachable", "unsubscribed", "move_on"]


class Code(NamedTuple):
    meaning: str
    kind: Class


#: SMS.ru's request and number codes and what they mean for the cascade (section 5.3).
#: `move_on`: a limit that lasts hours (per number, per day): the next step is tried at once.
CODES: Final[dict[int, Code]] = {
    200: Code("wrong api_id", "account"),
    201: Code("not enough money on the account", "account"),
    202: Code("wrong recipient number, or no route to it", "unreachable"),
    203: Code("no message text", "permanent"),
    204: Code("the sender name is not approved", "account"),
    205: Code("the message is too long (more than 8 SMS)", "permanent"),
    206: Code("the daily sending limit would be exceeded", "transient"),
    207: Code("no route to this number", "unreachable"),
    208: Code("wrong time parameter", "permanent"),
    209: Code("the number is in the stop-list", "unsubscribed"),
    210: Code("GET used where POST is required", "permanent"),
    211: Code("method not found", "permanent"),
    212: Code("the text is not UTF-8", "permanent"),
    213: Code("more than 100 numbers", "permanent"),
    220: Code("the service is temporarily unavailable", "transient"),
    230: Code("the daily limit of messages to this number is exceeded", "move_on"),
    231: Code("too many identical messages to this number this minute", "transient"),
    232: Code("too many identical messages to this number today", "move_on"),
    233: Code("code messages to this number too often", "move_on"),
    300: Code("wrong token (expired, or the IP changed)", "account"),
    301: Code("wrong api_id, or login and password", "account"),
    302: Code("the account is not confirmed", "account"),
    500: Code("server error", "transient"),
    901: Code("the callback URL is invalid", "permanent"),
    902: Code("the callback handler was not found", "permanent"),
}

#: Delivery status codes that are receipts (the others: -1, 100, 101 are SMS.ru's own steps).
STATUSES: Final[dict[int, tuple[ReceiptStatus, str | None]]] = {
    102: (ReceiptStatus.SENT, None),
    103: (ReceiptStatus.DELIVERED, None),
    104: (ReceiptStatus.FAILED, "not delivered: its lifetime expired"),
    105: (ReceiptStatus.FAILED, "not delivered: deleted by the operator"),
    106: (ReceiptStatus.FAILED, "not delivered: phone failure"),
    107: (ReceiptStatus.FAILED, "not delivered: unknown reason"),
    108: (ReceiptStatus.FAILED, "not delivered: rejected"),
    110: (ReceiptStatus.READ, None),
    150: (ReceiptStatus.FAILED, "not delivered: no route to this number"),
}
#: Minutes a `transient` limit is waited out before the same gateway is tried again.
_WAITS: Final = {206: 3600.0, 231: 60.0}


class SmsRuSettings(SmsPricing):
    """Settings of `type: smsru`."""

    api_id: SecretStr = Field(
        description="The SMS.ru `api_id`; it also keys the delivery callbacks' hash."
    )
    sender: str | None = Field(
        default=None,
        min_length=1,
        description="The approved sender name (`from`); `null`: the account's default.",
    )
    api_url: Url = Field(
        default=API_URL, description="The SMS.ru API root (an emulator's in tests)."
    )
    timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="How long one API call may take before it counts as a timeout (transient, "
        "or an unknown outcome once the request went out).",
    )
    poll_interval: Duration | None = Field(
        default=300.0,
        gt=0,
        description="How often the status of messages awaiting a receipt is polled; `null`: "
        "rely on the delivery callback alone.",
    )


class SmsRuProvider(HttpProvider):
    """`type: smsru`: one `sms/send` call per message; callbacks and `sms/status` polls."""

    type_name = "smsru"
    default_channel = "sms"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(
        {ReceiptStatus.SENT, ReceiptStatus.DELIVERED, ReceiptStatus.FAILED}
    )
    max_segments: ClassVar[int | None] = MAX_SEGMENTS
    poll_batch: ClassVar[int] = STATUS_BATCH
    webhook_methods = frozenset({"POST"})
    Settings = SmsRuSettings
    settings: SmsRuSettings

    def __init__(self, name: str, settings: ProviderSettings, **kwargs: object) -> None:
        super().__init__(name, settings, **kwargs)  # type: ignore[arg-type]
        # the setting, per instance: what `decide()` reads (`Traits.poll_interval`)
        self.poll_interval = self.settings.poll_interval  # type: ignore[misc]

    def url(self, method: str) -> str:
        return f"{self.settings.api_url.rstrip('/')}/{method}"

    # out

    def form(self, request: SendRequest) -> list[tuple[str, str]]:
        """The form fields of one send."""
        fields = [
            ("api_id", self.settings.api_id.get_secret_value()),
            ("to", number(request.address)),
            ("msg", request.text),
            ("json", "1"),
        ]
        if self.settings.sender is not None:
            fields.append(("from", self.settings.sender))
        return fields

    async def send(self, request: SendRequest) -> SendResult:
        """Send to one number; its `sms_id` is the provider message id."""
        answer = await self._post("sms/send", self.form(request))
        data = _object(answer)
        if data is None:
            # a 200 that is not SMS.ru's JSON: it may have taken the message
            raise UnknownOutcomeError(
                f"HTTP {answer.status}, not SMS.ru's JSON: {answer.text()}",
                provider=self.name,
                code="bad_answer",
            )
        if data.get("status") != "OK":
            raise self.refused(data.get("status_code"), data.get("status_text"))
        sms = data.get("sms")
        entry = sms.get(number(request.address)) if isinstance(sms, dict) else None
        if not isinstance(entry, dict) and isinstance(sms, dict) and len(sms) == 1:
            entry = next(iter(sms.values()))
        if not isinstance(entry, dict):
            raise UnknownOutcomeError(
                f"status OK without a result for the number: {answer.text()}",
                provider=self.name,
                code="no_sms_id",
            )
        if entry.get("status") != "OK":
            raise self.refused(entry.get("status_code"), entry.get("status_text"))
        sms_id = entry.get("sms_id")
        if not isinstance(sms_id, str) or not sms_id:
            raise UnknownOutcomeError(
                f"status OK without an sms_id: {answer.text()}",
                provider=self.name,
                code="no_sms_id",
            )
        return SendResult(sms_id, self.settings.estimate(request.text))

    async def _post(self, method: str, fields: list[tuple[str, str]]) -> Answer:
        answer = await self.request(
            "POST",
            self.url(method),
            content=form_body(fields),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        if answer.status != 200:
            raise self.refusal(answer, f"HTTP {answer.status}: {answer.text()}")
        return answer

    def refused(self, code: object, words: object) -> ProviderError:
        """The error for an SMS.ru `status_code` (section 5.3); one nobody classified is
        permanent, with SMS.ru's words."""
        value = code if isinstance(code, int) and not isinstance(code, bool) else None
        known = CODES.get(value) if value is not None else None
        said = words if isinstance(words, str) and words else None
        tag = str(value) if value is not None else "no_code"
        text = f"SMS.ru {tag}: {said or (known.meaning if known else 'refused')}"[:300]
        name = self.name
        if known is None:
            return PermanentError(text, provider=name, code=tag)
        if known.kind == "transient":
            return TransientError(text, provider=name, code=tag, retry_after=_WAITS.get(value or 0))
        if known.kind == "unsubscribed":
            return UnreachableError(text, provider=name, code=tag, gone="unsubscribed")
        if known.kind in ("unreachable", "move_on"):
            return UnreachableError(text, provider=name, code=tag)
        return PermanentError(text, provider=name, code=tag, account=known.kind == "account")

    # in: polling

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        """Ask `sms/status` about these ids in one call; a refused call raises (the poller
        backs off and asks again)."""
        ids = list(provider_message_ids)[: self.poll_batch]
        fields = [
            ("api_id", self.settings.api_id.get_secret_value()),
            ("sms_id", ",".join(ids)),
            ("json", "1"),
        ]
        answer = await self._post("sms/status", fields)
        data = _object(answer)
        if data is None:
            raise TransientError(
                f"sms/status answered {answer.text()}", provider=self.name, code="bad_answer"
            )
        if data.get("status") != "OK":
            raise self.refused(data.get("status_code"), data.get("status_text"))
        found = data.get("sms")
        receipts = []
        for sms_id in ids:
            entry = found.get(sms_id) if isinstance(found, dict) else None
            code = entry.get("status_code") if isinstance(entry, dict) else None
            cost = entry.get("cost") if isinstance(entry, dict) else None
            receipt = self.receipt(sms_id, code, cost)
            if receipt is not None:
                receipts.append(receipt)
        return receipts

    def receipt(self, sms_id: str, code: object, cost: object = None) -> Receipt | None:
        """The receipt an SMS.ru delivery status code reports (with the price SMS.ru says
        the message cost, where a status answer gives it), or None for its own steps."""
        if isinstance(code, str) and code.lstrip("-").isdigit():
            code = int(code)
        if not isinstance(code, int) or isinstance(code, bool) or code not in STATUSES:
            return None
        status, error = STATUSES[code]
        return Receipt(
            provider=self.name,
            provider_message_id=sms_id,
            status=status,
            ts=self.clock.now(),
            code=str(code) if status is ReceiptStatus.FAILED else None,
            error=error,
            receipt_id=f"{sms_id}:{code}",
            cost=float(cost)
            if isinstance(cost, int | float) and not isinstance(cost, bool)
            else None,
        )

    # in: the callback

    async def receive(self, request: WebhookRequest) -> Inbound:
        """A delivery callback: `hash` checked, its `sms_status` events as receipts, and
        the answer `100` SMS.ru waits for."""
        events = self.verify(request)
        receipts = []
        for event in events:
            lines = event.replace("\r\n", "\n").split("\n")
            if lines[0] != "sms_status":
                continue  # another event type (callcheck_status): nothing of ours
            if len(lines) < 3 or not lines[1]:
                raise ValueError(f"an sms_status event needs an id and a code: {event[:100]!r}")
            receipt = self.receipt(lines[1], lines[2].strip())
            if receipt is not None:
                receipts.append(receipt)
        return Inbound(receipts=receipts, answer=WebhookResponse.text("100"))

    def verify(self, request: WebhookRequest) -> list[str]:
        """The callback's `data[]` elements, once `hash` matches; `BadSignature` if not."""
        if len(request.body) > _MAX_CALLBACK:
            raise BadSignature("the body is too large to be an SMS.ru callback")
        try:
            text = request.body.decode("utf-8")
            params = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_EVENTS + 1)
        except ValueError:
            raise BadSignature("the body is not a form SMS.ru signed") from None
        given = [v for k, v in params if k == "hash"]
        if len(given) != 1 or not given[0]:
            raise BadSignature("no hash in the callback")
        events = [v for k, v in params if k.startswith("data[")]
        if not events:
            raise BadSignature("no data[] in the callback")
        expected = callback_hash(self.settings.api_id.get_secret_value(), events)
        if not same(given[0].strip().lower(), expected):
            raise BadSignature("the callback's hash does not match")
        return events


def callback_hash(api_id: str, events: Sequence[str]) -> str:
    """`hash` of an SMS.ru callback: hex SHA-256 of `api_id` and every `data[]` element."""
    return sha256_hex((api_id + "".join(events)).encode("utf-8"))


def number(address: str) -> str:
    """A number as SMS.ru takes it: the digits, no `+`."""
    return "".join(c for c in address if c.isdigit())


def _object(answer: Answer) -> dict[str, object] | None:
    try:
        data = answer.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


__all__ = ["CODES", "STATUSES", "SmsRuProvider", "SmsRuSettings", "callback_hash", "number"]
