"""Twilio Programmable Messaging (SMS) on loopback (providers.md section 4).

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, a form, with HTTP Basic auth
(`AccountSid:AuthToken`), checked as Twilio checks it; answers 201 with the Message
resource (a fresh `SM…` sid, `queued`, or `accepted` with a Messaging Service) or Twilio's
error envelope (`code`, `message`, `more_info`, `status`) with its HTTP status.
`GET …/Messages/{sid}.json` fetches a message with its latest status.

Status callbacks (`sent`, `delivered`, `undelivered` or `failed` with `ErrorCode`) are
POSTed as forms to the message's `StatusCallback`, or to `webhook_url` when the send gave
none, signed as Twilio signs them: `X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL
+ each sorted name and its value))`. A `fail_receipt` entry's `code` picks the error
(default 30003); 30001, 30002, 30032 and 30034 come as `failed`, the others as
`undelivered`. twilio-python reaches it with `client.api.base_url = emulator.api_url`.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import web

from cascade_notify.clock import Clock
from cascade_notify.providers._signing import hmac_b64, same
from cascade_notify.testing.emulators._base import (
    Accepted,
    Emulator,
    Handler,
    RecordedRequest,
    Webhook,
    json_answer,
)
from cascade_notify.testing.emulators._script import Entry

API_VERSION: Final = "2010-04-01"
MAX_BODY: Final = 1600
_E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
#: Asynchronous codes Twilio reports as `failed` (never sent) rather than `undelivered`.
FAILED_CODES: Final = frozenset({30001, 30002, 30032, 30034})
DEFAULT_DELIVERY_ERROR: Final = 30003


class TwilioError(NamedTuple):
    code: int
    http: int
    message: str


#: Named errors scripts may use: Twilio's REST codes (section 4.4) and their HTTP status.
ERRORS: Final[Mapping[str, TwilioError]] = {
    "bad_token": TwilioError(20003, 401, "Authenticate"),
    "not_found": TwilioError(20404, 404, "The requested resource was not found"),
    "rate_limited": TwilioError(20429, 429, "Too Many Requests"),
    "invalid_number": TwilioError(21211, 400, "Invalid 'To' Phone Number"),
    "region_not_allowed": TwilioError(
        21408, 400, "Permission to send an SMS has not been enabled for the region"
    ),
    "not_sms_capable": TwilioError(21606, 400, "The 'From' phone number is not SMS-capable"),
    "unverified": TwilioError(
        21608, 400, "The number is unverified. Trial accounts may only send to verified numbers"
    ),
    "unsubscribed": TwilioError(21610, 400, "Attempt to send to unsubscribed recipient"),
    "queue_full": TwilioError(21611, 400, "This 'From' number has exceeded the queue limit"),
    "not_routable": TwilioError(
        21612, 400, "The 'To' phone number is not currently reachable from this 'From' number"
    ),
    "not_mobile": TwilioError(21614, 400, "'To' number is not a valid mobile number"),
    "landline": TwilioError(21635, 400, "'To' number cannot be a landline"),
    "too_long": TwilioError(21658, 400, "Parameter exceeded character limit"),
    "server_error": TwilioError(20500, 500, "Internal Server Error"),
    "unavailable": TwilioError(20503, 503, "Service Unavailable"),
    # what emulators.md calls the usual names, for scripts shared across emulators
    "blocked": TwilioError(21610, 400, "Attempt to send to unsubscribed recipient"),
    "not_a_user": TwilioError(21614, 400, "'To' number is not a valid mobile number"),
}


class TwilioEmulator(Emulator):
    """Twilio's Messages API. `from_number` is the number callbacks name as `From` when a
    Messaging Service sent; `webhook_url` is where callbacks go for a send without a
    `StatusCallback` (and what `settings()` gives as `public_url`)."""

    name: ClassVar[str] = "twilio"
    errors: ClassVar[Mapping[str, Any]] = ERRORS
    receipts: ClassVar[Mapping[str, str]] = {
        "sent": "sent",
        "delivered": "delivered",
        "failed": "undelivered",
    }
    events: ClassVar[tuple[str, ...]] = ("stop", "start")
    # Twilio does not retry a status callback that failed (it logs an 11200 warning)
    retry_delays: ClassVar[tuple[float, ...]] = ()

    def __init__(
        self,
        *,
        account_sid: str = "AC" + "0123456789abcdef" * 2,
        auth_token: str = "emulator-auth-token",
        from_number: str = "+15005550006",
        webhook_url: str | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        super().__init__(webhook_url=webhook_url, clock=clock, **options)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self._status: dict[str, tuple[str, int | None]] = {}

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "twilio_sms",
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "from_number": self.from_number,
            "api_url": self.api_url,
        }
        if self.webhook_url is not None:
            out["public_url"] = self.webhook_url
        return out

    def normalize(self, address: str) -> str:
        digits = re.sub(r"[^0-9]", "", address)
        return "+" + digits if digits else address

    def _routes(self) -> list[tuple[str, str, Handler]]:
        base = f"/{API_VERSION}/Accounts/{{account}}"
        return [
            ("POST", base + "/Messages.json", self._create),
            ("GET", base + "/Messages/{sid}.json", self._fetch),
        ]

    def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _answer(ERRORS["not_found"], f"The requested resource {request.path} was not found")

    def _reset_state(self) -> None:
        self._status.clear()

    # -- signing ----------------------------------------------------------------

    def signature(self, url: str, params: Mapping[str, str]) -> str:
        """`X-Twilio-Signature` of a form posted to `url` (section 4.6)."""
        data = url + "".join(name + params[name] for name in sorted(params))
        return hmac_b64(self.auth_token.encode("utf-8"), data.encode("utf-8"), "sha1")

    def _sign(self, body: bytes) -> dict[str, str]:
        return self._signed(self.webhook_url or "", body)

    def _signed(self, url: str, body: bytes) -> dict[str, str]:
        params = dict(_form(body))
        return {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
            "X-Twilio-Signature": self.signature(url, params),
        }

    def _webhook(self, kind: str, body: bytes, message_id: str | None = None) -> Webhook:
        hook = super()._webhook(kind, body, message_id)
        message = next((m for m in reversed(self.outbox) if m.id == message_id), None)
        callback = None if message is None else message.data.get("status_callback")
        if callback:
            hook.url = callback
            hook.headers = self._signed(callback, body)
        return hook

    # -- the send -----------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        record = self.record_of(request)
        refused = self._check(request, record)
        if refused is not None:
            return refused
        form: dict[str, str] = record.parsed
        to = form["To"]
        service = form.get("MessagingServiceSid")

        def accept() -> Accepted:
            sid = "SM" + secrets.token_hex(16)
            self._status[sid] = ("accepted" if service else "queued", None)
            data = {
                "to": to,
                "from": None if service else form.get("From"),
                "messaging_service_sid": service,
                "status_callback": form.get("StatusCallback"),
                "validity_period": form.get("ValidityPeriod"),
                "created": self.clock.now(),
            }
            return Accepted(sid, self.normalize(to), form["Body"], record, data)

        def answer(message: Accepted, entry: Entry) -> web.StreamResponse:
            return json_answer(self._resource(message), status=201)

        return await self._send(request, to, accept, answer)

    async def _fetch(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _answer(ERRORS["bad_token"])
        sid = request.match_info["sid"]
        message = next((m for m in self.outbox if m.id == sid), None)
        if request.match_info["account"] != self.account_sid or message is None:
            return self._not_found(request)
        return json_answer(self._resource(message))

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(auth[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return same(user, self.account_sid) and same(password, self.auth_token)

    def _check(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse | None:
        """What Twilio refuses before looking at the recipient, in the order it checks."""
        if not self._authorized(request):
            return _answer(ERRORS["bad_token"])
        if request.match_info["account"] != self.account_sid:
            return self._not_found(request)
        form = record.parsed
        if request.content_type != "application/x-www-form-urlencoded" or not isinstance(
            form, dict
        ):
            form = {}
        record.parsed = form
        to = form.get("To", "")
        if not to:
            return _answer(TwilioError(21604, 400, "A 'To' phone number is required."))
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return _answer(TwilioError(21603, 400, "A 'From' phone number is required."))
        if not form.get("Body"):
            return _answer(TwilioError(21602, 400, "Message body is required."))
        if not _E164.fullmatch(to):
            record.address, record.entry = self.normalize(to), "invalid_number"
            return _answer(ERRORS["invalid_number"], f"Invalid 'To' Phone Number: {to}")
        if len(form["Body"]) > MAX_BODY:
            return _answer(ERRORS["too_long"], f"Body exceeds the {MAX_BODY} character limit")
        callback = form.get("StatusCallback")
        if callback is not None and urlsplit(callback).scheme not in ("http", "https"):
            # (the code is not in providers.md: Twilio's 21609, "Invalid StatusCallback")
            return _answer(TwilioError(21609, 400, "Invalid StatusCallback"))
        return None

    def _error(self, entry: Entry, address: str) -> web.StreamResponse:
        error = ERRORS[entry.do]
        headers = {"Retry-After": str(entry.retry_after)} if entry.retry_after else None
        return _answer(error, entry.detail, headers)

    def _resource(self, message: Accepted) -> dict[str, Any]:
        data = message.data
        status, code = self._status.get(message.id, ("queued", None))
        created = _date(data["created"])
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{message.id}"
        return {
            "sid": message.id,
            "status": status,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "messaging_service_sid": data["messaging_service_sid"],
            "from": data["from"],
            "to": data["to"],
            "body": message.text,
            "direction": "outbound-api",
            "num_segments": str(_segments(message.text or "")),
            "num_media": "0",
            "price": None,
            "price_unit": "USD",
            "error_code": code,
            "error_message": None,
            "date_sent": None if status in ("queued", "accepted") else created,
            "date_created": created,
            "date_updated": _date(self.clock.now()),
            "uri": uri + ".json",
            "subresource_uris": {"media": uri + "/Media.json"},
        }

    # -- status callbacks ---------------------------------------------------------

    def _receipt(self, message: Accepted, status: str, entry: Entry) -> bytes:
        data = message.data
        code = None
        if status == "undelivered":
            code = entry.code or DEFAULT_DELIVERY_ERROR
            if code in FAILED_CODES:
                status = "failed"
        self._status[message.id] = (status, code)
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "From": data["from"] or self.from_number,
            "MessageSid": message.id,
            "MessageStatus": status,
            "SmsSid": message.id,
            "SmsStatus": status,
            "To": data["to"],
        }
        if data["messaging_service_sid"]:
            params["MessagingServiceSid"] = data["messaging_service_sid"]
        if code is not None:
            params["ErrorCode"] = str(code)
        if status in ("delivered", "undelivered"):
            params["RawDlrDoneDate"] = datetime.fromtimestamp(self.clock.now(), UTC).strftime(
                "%y%m%d%H%M"
            )
        return urlencode(sorted(params.items())).encode("ascii")

    def _event(
        self, name: str, address: str, data: Mapping[str, Any]
    ) -> list[tuple[str, bytes, str | None]]:
        # the customer replies STOP (or START): later sends answer 21610 (or go through),
        # and the incoming message is posted to webhook_url with Twilio's OptOutType
        self.force(address, "unsubscribed" if name == "stop" else None)
        sid = "SM" + secrets.token_hex(16)
        word = name.upper()
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "Body": str(data.get("text", word)),
            "From": address,
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": "1",
            "OptOutType": word,
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": self.from_number,
        }
        return [("message", urlencode(sorted(params.items())).encode("ascii"), sid)]


def _form(body: bytes) -> list[tuple[str, str]]:
    return parse_qsl(body.decode("utf-8"), keep_blank_values=True)


# what Twilio bills, counted here on its own (emulators use nothing of the library's but
# the clock and the signing): providers.md section 7
_GSM: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION: Final = frozenset("^{}\\[~]|€\f")


def _segments(text: str) -> int:
    if all(c in _GSM or c in _GSM_EXTENSION for c in text):
        septets = sum(2 if c in _GSM_EXTENSION else 1 for c in text)
        return 1 if septets <= 160 else -(-septets // 153)
    units = len(text.encode("utf-16-le", "surrogatepass")) // 2
    return 1 if units <= 70 else -(-units // 67)


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def _answer(
    error: TwilioError, message: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = {
        "code": error.code,
        "message": message or error.message,
        "more_info": f"https://www.twilio.com/docs/errors/{error.code}",
        "status": error.http,
    }
    return json_answer(body, status=error.http, headers=headers)


__all__ = ["ERRORS", "FAILED_CODES", "TwilioEmulator", "TwilioError"]
