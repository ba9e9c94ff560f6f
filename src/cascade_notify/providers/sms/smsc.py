"""`type: smsc`: SMS through SMSC.ru (providers.md section 6).

Out: `send()` POSTs a form to `{api_url}/sys/send.php`: `login`, `psw`, `phones` (the E.164
number, `+` kept so SMSC does not "correct" it), `mes`, `sender`, `fmt=3` (JSON),
`charset=utf-8` and `cost=3` (send, and report the price and balance). SMSC answers HTTP
200 whatever happened; an `error_code` is classified by `ERRORS` (section 6.1). A status
query needs the message's `id` and its phone, so the provider message id is
`<id>:<phone digits>`. The price SMSC reports (`cost`) is the attempt's cost when it
comes; else segments times `price_per_segment`.

In: SMSC's status callback format could not be confirmed (section 6.5), so this provider
takes no webhooks: receipts come by polling `sys/status.php` every `poll_interval`
seconds, up to `poll_batch` messages per call (comma lists of `id` and `phone` in the
same order). The poller backs off when a call fails and hands the receipts to the same
door a webhook's go through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final, Literal, NamedTuple
from urllib.parse import urlencode

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
from cascade_notify.providers.base import ProviderSettings, SendRequest, SendResult
from cascade_notify.providers.sms.pricing import SmsPricing
from cascade_notify.providers.sms.twilio import Url

API_URL: Final = "https://smsc.ru"
#: Messages asked about per `status.php` call (the API's own limit is unconfirmed).
STATUS_BATCH: Final = 100

Class = Literal["transient", "permanent", "account", "unreachable"]


class Code(NamedTuple):
    meaning: str
    kind: Class


#: SMSC's `error_code`s and what they mean for the cascade (section 6.1).
ERRORS: Final[dict[int, Code]] = {
    1: Code("error in the parameters", "permanent"),
    2: Code("wrong login or password, or access from a non-allowed IP", "account"),
    3: Code("insufficient funds", "account"),
    4: Code("the IP is temporarily blocked for frequent erroneous requests", "transient"),
    5: Code("wrong date format", "permanent"),
    6: Code("the message is forbidden (by its text or sender name)", "permanent"),
    7: Code("wrong phone format", "unreachable"),
    8: Code("the message cannot be delivered to this number", "unreachable"),
    9: Code("an identical request within a minute, or too many at once", "transient"),
}
#: How long a transient refusal is waited out, in seconds (9: "wait at least 60 s").
_WAITS: Final = {4: 300.0, 9: 60.0}

#: `status` values that are receipts (-3 not found and -1 waiting are SMSC's own steps).
STATUSES: Final[dict[int, tuple[ReceiptStatus, str | None]]] = {
    -2: (ReceiptStatus.FAILED, "stopped"),
    0: (ReceiptStatus.SENT, None),
    1: (ReceiptStatus.DELIVERED, None),
    2: (ReceiptStatus.READ, None),
    3: (ReceiptStatus.FAILED, "expired: not delivered within its lifetime"),
    4: (ReceiptStatus.READ, None),
    20: (ReceiptStatus.FAILED, "impossible to deliver"),
    22: (ReceiptStatus.FAILED, "invalid number"),
    23: (ReceiptStatus.FAILED, "forbidden"),
    24: (ReceiptStatus.FAILED, "insufficient funds"),
    25: (ReceiptStatus.FAILED, "unavailable number"),
}
#: Why a status 20 or 25 happened (`err`, section 6.4).
DETAILS: Final[dict[int, str]] = {
    1: "the subscriber does not exist",
    6: "the subscriber is offline or out of coverage",
    11: "the service is not connected (cannot receive SMS, roaming, landline)",
    12: "phone or SIM error",
    13: "the subscriber is blocked",
    21: "the service is not supported by the device",
    200: "virtual sending (test mode)",
    219: "the SIM card was recently replaced",
    220: "the operator's queue for this subscriber overflowed",
}


class SmscSettings(SmsPricing):
    """Settings of `type: smsc`."""

    login: str = Field(min_length=1, description="The SMSC.ru account login.")
    password: SecretStr = Field(description="The account's password (sent as `psw`).")
    sender: str | None = Field(
        default=None,
        min_length=1,
        description="The approved sender name; `null`: the account's default.",
    )
    api_url: Url = Field(
        default=API_URL, description="The SMSC.ru API root (an emulator's in tests)."
    )
    timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="How long one API call may take before it counts as a timeout (transient, "
        "or an unknown outcome once the request went out).",
    )
    poll_interval: Duration = Field(
        default=60.0,
        gt=0,
        description="How often the status of messages awaiting a receipt is polled (SMSC takes "
        "no webhooks here).",
    )


class SmscProvider(HttpProvider):
    """`type: smsc`: one `send.php` call per message; receipts by polling `status.php`."""

    type_name = "smsc"
    default_channel = "sms"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(
        {ReceiptStatus.SENT, ReceiptStatus.DELIVERED, ReceiptStatus.FAILED}
    )
    poll_batch: ClassVar[int] = STATUS_BATCH
    Settings = SmscSettings
    settings: SmscSettings

    def __init__(self, name: str, settings: ProviderSettings, **kwargs: object) -> None:
        super().__init__(name, settings, **kwargs)  # type: ignore[arg-type]
        # the setting, per instance: what `decide()` reads (`Traits.poll_interval`)
        self.poll_interval = self.settings.poll_interval  # type: ignore[misc]

    def url(self, script: str) -> str:
        return f"{self.settings.api_url.rstrip('/')}/sys/{script}"

    def _auth(self) -> list[tuple[str, str]]:
        return [("login", self.settings.login), ("psw", self.settings.password.get_secret_value())]

    # out

    def form(self, request: SendRequest) -> list[tuple[str, str]]:
        """The form fields of one send."""
        fields = [
            *self._auth(),
            ("phones", request.address),
            ("mes", request.text),
            ("fmt", "3"),
            ("charset", "utf-8"),
            ("cost", "3"),
        ]
        if self.settings.sender is not None:
            fields.append(("sender", self.settings.sender))
        return fields

    async def send(self, request: SendRequest) -> SendResult:
        """Send to one number; `<id>:<phone digits>` is the provider message id."""
        answer = await self.request(
            "POST",
            self.url("send.php"),
            content=form_body(self.form(request)),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        if answer.status != 200:
            raise self.refusal(answer, f"HTTP {answer.status}: {answer.text()}")
        data = _object(answer)
        if data is not None and "error_code" in data:
            raise self.refused(data.get("error_code"), data.get("error"))
        sent = data.get("id") if data is not None else None
        if isinstance(sent, bool) or not isinstance(sent, int | str) or sent == "":
            raise UnknownOutcomeError(
                f"HTTP 200 without a message id: {answer.text()}",
                provider=self.name,
                code="no_id",
            )
        reported = _number(data.get("cost") if data is not None else None)
        cost = self.settings.estimate(request.text, reported)
        return SendResult(f"{sent}:{digits(request.address)}", cost)

    def refused(self, code: object, words: object) -> ProviderError:
        """The error for an SMSC `error_code`; one nobody classified is permanent."""
        value = code if isinstance(code, int) and not isinstance(code, bool) else None
        known = ERRORS.get(value) if value is not None else None
        said = words if isinstance(words, str) and words else None
        tag = str(value) if value is not None else "no_code"
        text = f"SMSC {tag}: {said or (known.meaning if known else 'refused')}"[:300]
        name = self.name
        if known is None:
            return PermanentError(text, provider=name, code=tag)
        if known.kind == "transient":
            return TransientError(text, provider=name, code=tag, retry_after=_WAITS.get(value or 0))
        if known.kind == "unreachable":
            return UnreachableError(text, provider=name, code=tag)
        return PermanentError(text, provider=name, code=tag, account=known.kind == "account")

    # in: polling

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        """Ask `status.php` about these messages in one call; a refused call raises (the
        poller backs off and asks again)."""
        pairs = [pair for m in list(provider_message_ids)[: self.poll_batch] if (pair := split(m))]
        if not pairs:
            return []
        query = urlencode(
            [
                *self._auth(),
                ("id", ",".join(i for i, _ in pairs)),
                ("phone", ",".join(p for _, p in pairs)),
                ("fmt", "3"),
                ("charset", "utf-8"),
            ]
        )
        answer = await self.request("GET", f"{self.url('status.php')}?{query}")
        if answer.status != 200:
            raise self.refusal(answer, f"HTTP {answer.status}: {answer.text()}")
        try:
            data = answer.json()
        except ValueError:
            raise TransientError(
                f"status.php answered {answer.text()}", provider=self.name, code="bad_answer"
            ) from None
        if isinstance(data, dict) and "error_code" in data:
            raise self.refused(data.get("error_code"), data.get("error"))
        entries = data if isinstance(data, list) else [data]
        named = _by_id(entries)
        receipts = []
        for index, (message, phone) in enumerate(pairs):
            entry = _entry_for(entries, named, index, message, phone)
            receipt = None if entry is None else self.receipt(f"{message}:{phone}", entry)
            if receipt is not None:
                receipts.append(receipt)
        return receipts

    def receipt(self, message_id: str, entry: dict[str, Any]) -> Receipt | None:
        """The receipt one `status.php` entry reports, or None for SMSC's own steps."""
        code = _int(entry.get("status"))
        if code is None or code not in STATUSES:
            return None
        status, error = STATUSES[code]
        err = _int(entry.get("err"))
        if status is ReceiptStatus.FAILED and err:
            error = f"{error}: {DETAILS.get(err, f'err {err}')}"
        return Receipt(
            provider=self.name,
            provider_message_id=message_id,
            status=status,
            ts=self.clock.now(),
            code=str(code) if status is ReceiptStatus.FAILED else None,
            error=error if status is ReceiptStatus.FAILED else None,
            receipt_id=f"{message_id}:{code}",
        )


def digits(address: str) -> str:
    return "".join(c for c in address if c.isdigit())


def split(message_id: str) -> tuple[str, str] | None:
    """`(id, phone)` of a provider message id, or None if it is not one of ours."""
    sent, _, phone = message_id.partition(":")
    return (sent, phone) if sent and phone else None


def _by_id(entries: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """The answer's entries that name their `id`, by it, in the answer's order: one pass,
    so matching a batch of 100 ids is not 100 scans of the answer."""
    named: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        if isinstance(entry, dict) and "id" in entry:
            named.setdefault(str(entry["id"]), []).append(entry)
    return named


def _entry_for(
    entries: list[Any],
    named: dict[str, list[dict[str, Any]]],
    index: int,
    message: str,
    phone: str,
) -> dict[str, Any] | None:
    """The answer's entry for one message: by its `id` (and `phone`) where the entries name
    them, else by position (the answer follows the order asked)."""
    for entry in named.get(message, ()):
        said = entry.get("phone")
        if said is None or digits(str(said)) == phone:
            return entry
    if index < len(entries) and isinstance(entries[index], dict) and "id" not in entries[index]:
        found: dict[str, Any] = entries[index]
        return found
    return None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number >= 0 and number == number and number != float("inf") else None


def _object(answer: Answer) -> dict[str, Any] | None:
    try:
        data = answer.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


__all__ = ["DETAILS", "ERRORS", "STATUSES", "SmscProvider", "SmscSettings", "digits", "split"]
