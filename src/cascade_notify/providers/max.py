"""`type: max_bot`: a MAX messenger bot (providers.md §3a).

Out: `POST {api_url}/messages?user_id=<id>` with `{"text", "notify"[, "format"]}` and
the header `Authorization: <token>`, the bare token with no `Bearer`. A 200 answer is
"accepted"; the provider message id is `message.body.mid`. MAX reports neither
delivery nor reading, so `receipts` is empty and a policy waiting for `delivered` or
`read` on it is refused at load time. MAX has no idempotency key: a send whose answer
was lost is an unknown outcome and is not repeated.

Errors are classified by the answer's `code` first, then by the HTTP status (§3a.4):
401 account, 403/404 unreachable, 400/405 permanent, 429/5xx/non-JSON transient. Only
`verify.token`, `attachment.not.ready` and `chat.denied` are confirmed code strings; the
others (`dialog.not.found`, `too.many.requests`, …) and the `error.dialog.suspended`
text are third-party readings, so each also falls back to its status.

In: webhook updates carry `X-Max-Bot-Api-Secret: <webhook_secret>` (a shared secret,
compared in constant time, 401 when missing or wrong). `bot_stopped` is a `gone` signal
for the user's id; `bot_started` with a payload a `linked` signal (the payload is taken
as the recipient id); every other update is acknowledged and ignored.

`ca_bundle` names a PEM file of extra roots (MAX asks integrators to trust the Минцифры
root for `platform-api2`); requests then go through an httpx transport verifying against
the system roots plus that file. An injected client or transport is used as given.
"""

from __future__ import annotations

import re
import ssl
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import AfterValidator, Field, FilePath, SecretStr

from cascade_notify._duration import Duration
from cascade_notify.clock import Clock
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.models import ReceiptStatus, Signal, SignalKind
from cascade_notify.providers._http import (
    Answer,
    HttpClient,
    HttpProvider,
    json_body,
    load_json,
    retry_after,
)
from cascade_notify.providers._signing import BadSignature, same, wall_time
from cascade_notify.providers.base import (
    Inbound,
    ProviderOverrides,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
)

DEFAULT_API_URL = "https://platform-api2.max.ru"
MAX_TEXT = 4000
SECRET_HEADER = "x-max-bot-api-secret"  # noqa: S105  (a header name, not a secret)
#: The longest deep-link payload MAX passes on (longer ones are dropped by MAX).
MAX_PAYLOAD = 128
_SECRET = re.compile(r"[A-Za-z0-9_-]{5,256}")
_USER_ID = re.compile(r"[1-9][0-9]{0,18}")
_SUSPENDED = "error.dialog.suspended"
# no wait hint is documented for 429 (unconfirmed): back off at least this long
_RATE_WAIT = 1.0


def _check_secret(secret: SecretStr | None) -> SecretStr | None:
    if secret is not None and not _SECRET.fullmatch(secret.get_secret_value()):
        raise ValueError("a MAX webhook secret is 5 to 256 characters of A-Z a-z 0-9 _ -")
    return secret


class MaxSettings(ProviderSettings):
    """Settings of `type: max_bot`."""

    token: SecretStr = Field(description="The bot's token, sent as the `Authorization` header.")
    api_url: str = Field(
        default=DEFAULT_API_URL, description="The MAX Bot API root (an emulator's in tests)."
    )
    ca_bundle: FilePath | None = Field(
        default=None,
        description="A PEM file of extra root certificates to trust beside the system's (MAX "
        "asks integrators to trust the Russian Ministry of Digital Development's "
        "root).",
    )
    timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="How long one API call may take before it counts as a timeout (transient, "
        "or an unknown outcome once the request went out).",
    )
    webhook_secret: Annotated[SecretStr | None, AfterValidator(_check_secret)] = Field(
        default=None,
        description="The secret webhook updates carry in `X-Max-Bot-Api-Secret`; without it "
        "the bot takes no webhooks.",
    )
    username: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = Field(
        default=None,
        description="The bot's username, for its deep links `https://max.ru/<username>?start=...`.",
    )


class MaxOverrides(ProviderOverrides):
    """`Message.overrides["max"]`: `format` for text authored as markup, `notify: false`
    for a silent message, `disable_link_preview`."""

    format: Literal["markdown", "html"] | None = Field(
        default=None,
        description="The markup an overriding `text` is written in; `null`: plain text.",
    )
    notify: bool = Field(default=True, description="`false`: a silent message.")
    disable_link_preview: bool = Field(
        default=False, description="`true`: no preview of links in the text."
    )


def _code_class(code: str, message: str) -> tuple[type[ProviderError], str | None] | None:
    """The class a known `code` says (and the `gone` reason), or None: use the status."""
    if code == "verify.token":
        return PermanentError, None
    if code == "chat.denied":
        # we address people only (`user_id`): no access to a person's dialog is unreachable
        return UnreachableError, ("bot_stopped" if _SUSPENDED in message else None)
    if code in ("dialog.not.found", "chat.not.found", "user.not.found"):
        return UnreachableError, None
    if code in ("attachment.not.ready", "too.many.requests", "service.unavailable"):
        return TransientError, None
    if code == "proto.payload":
        return PermanentError, None
    return None


class MaxProvider(HttpProvider):
    """`type: max_bot`: sends to a MAX user id; takes `bot_started`/`bot_stopped` updates."""

    type_name = "max_bot"
    default_channel = "max"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset()
    max_length = MAX_TEXT
    signals: ClassVar[bool] = True
    link_payload = MAX_PAYLOAD
    webhook_methods = frozenset({"POST"})
    Settings = MaxSettings
    Overrides = MaxOverrides
    settings: MaxSettings

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        *,
        clock: Clock | None = None,
        client: httpx.AsyncClient | None = None,
        http: HttpClient | None = None,
    ) -> None:
        ca_bundle = getattr(settings, "ca_bundle", None)
        if ca_bundle is not None and client is None and http is None:
            # the shared base's own aiohttp session takes no SSL context: an httpx
            # transport of ours does (the base then owns and closes its client)
            context = ssl.create_default_context()
            context.load_verify_locations(cafile=str(ca_bundle))
            http = httpx.AsyncHTTPTransport(verify=context)
        super().__init__(name, settings, clock=clock, client=client, http=http)
        self._url = self.settings.api_url.rstrip("/") + "/messages"

    async def send(self, request: SendRequest) -> SendResult:
        """POST the text to the user's dialog; `message.body.mid` is the message id."""
        if not _USER_ID.fullmatch(request.address):
            raise PermanentError(
                "a MAX address is the numeric user_id the bot learned (bot_started)",
                provider=self.name,
                code="bad_user_id",
            )
        overrides = request.overrides
        if not isinstance(overrides, MaxOverrides):  # a SendRequest built by hand
            overrides = MaxOverrides()
        payload: dict[str, Any] = {"text": request.text, "notify": overrides.notify}
        if overrides.format is not None:
            payload["format"] = overrides.format
        query = f"?user_id={request.address}"
        if overrides.disable_link_preview:
            query += "&disable_link_preview=true"
        answer = await self.request(
            "POST",
            self._url + query,
            content=json_body(payload),
            headers={
                "authorization": self.settings.token.get_secret_value(),
                "content-type": "application/json",
            },
        )
        if answer.ok:
            return SendResult(self._mid(answer))
        raise self._refused(answer)

    def _mid(self, answer: Answer) -> str:
        try:
            mid = answer.json()["message"]["body"]["mid"]
        except (ValueError, KeyError, TypeError):
            mid = None
        if not isinstance(mid, str) or not mid:
            # accepted, or not: a 200 without the message cannot say which
            raise UnknownOutcomeError(
                f"HTTP {answer.status} without message.body.mid: {answer.text()}",
                provider=self.name,
                code="no_mid",
            )
        return mid

    def _refused(self, answer: Answer) -> ProviderError:
        """Classify a non-2xx answer: by its `code`, then by its status (§3a.4)."""
        status = answer.status
        try:
            data = answer.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            if status == 401:
                return PermanentError(
                    f"HTTP 401: {answer.text()}", provider=self.name, code="401", account=True
                )
            # not the API's JSON: a proxy or a gateway in trouble
            return self._transient(answer, f"HTTP {status}: {answer.text()}", str(status))
        code = data.get("code")
        code = code if isinstance(code, str) and code else str(status)
        words = data.get("message") or data.get("error") or ""
        words = words if isinstance(words, str) else str(words)
        message = f"HTTP {status} {code}: {words}"[:500]
        known = _code_class(code, words)
        if known is None:
            known = _status_class(status)
        cls, gone = known
        if cls is TransientError:
            return self._transient(answer, message, code)
        if cls is UnreachableError:
            return UnreachableError(message, provider=self.name, code=code, gone=gone)
        if cls is PermanentError:
            account = code == "verify.token" or status == 401
            return PermanentError(message, provider=self.name, code=code, account=account)
        return self.refusal(answer, message, code)

    def _transient(self, answer: Answer, message: str, code: str) -> TransientError:
        wait = retry_after(answer.headers.get("retry-after"), wall_time())
        if wait is None and answer.status == 429:
            wait = _RATE_WAIT
        if wait is None and code == "attachment.not.ready":
            wait = _RATE_WAIT
        return TransientError(message, provider=self.name, code=code, retry_after=wait)

    def deep_link(self, payload: str) -> str:
        """`https://max.ru/<username>?start=<payload>`: opens the bot; Start sends a
        `bot_started` update with the payload."""
        if not payload or len(payload) > MAX_PAYLOAD:
            raise ValueError(f"a start payload is 1 to {MAX_PAYLOAD} characters")
        if not self.settings.username:
            raise ValueError(
                f"provider {self.name!r} does not know its bot's username: set `username:` "
                "to make its deep links"
            )
        return f"https://max.ru/{self.settings.username}?start={payload}"

    async def receive(self, request: WebhookRequest) -> Inbound:
        """Verify `X-Max-Bot-Api-Secret` (constant time), then read one Update."""
        expected = self.settings.webhook_secret
        if expected is None:
            raise BadSignature("no webhook_secret is configured for this MAX bot", status=401)
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            raise BadSignature("X-Max-Bot-Api-Secret is missing", status=401)
        if not same(given, expected.get_secret_value()):
            raise BadSignature("X-Max-Bot-Api-Secret does not match", status=401)
        update = load_json(request.body)
        if not isinstance(update, dict) or not isinstance(update.get("update_type"), str):
            raise ValueError("a MAX update is a JSON object with update_type")
        kind = update["update_type"]
        if kind not in ("bot_started", "bot_stopped"):
            return Inbound()
        user_id = _user_id(update)
        ts = _seconds(update.get("timestamp"), self.clock.now())
        if kind == "bot_stopped":
            signal = Signal(
                kind=SignalKind.GONE,
                channel=self.channel,
                address=user_id,
                provider=self.name,
                reason="bot_stopped",
                ts=ts,
            )
            return Inbound(signals=[signal])
        payload = update.get("payload")
        if not isinstance(payload, str) or not payload.strip():
            return Inbound()  # started without a deep link: nothing says whose it is
        if len(payload) > MAX_PAYLOAD:
            return Inbound()  # MAX drops such payloads: not one it passed on
        linked = Signal(
            kind=SignalKind.LINKED,
            channel=self.channel,
            address=user_id,
            provider=self.name,
            reason="bot_started",
            ts=ts,
            token=payload,  # unverified: the notifier checks it
        )
        return Inbound(signals=[linked])


def _status_class(status: int) -> tuple[type[ProviderError], str | None]:
    if status == 401:
        return PermanentError, None
    if status in (403, 404):
        return UnreachableError, None
    if status in (400, 405):
        return PermanentError, None
    if status in (408, 429) or status >= 500:
        return TransientError, None
    return ProviderError, None  # anything else: the shared HTTP classes (`refusal`)


def _user_id(update: dict[str, Any]) -> str:
    user = update.get("user")
    value = user.get("user_id") if isinstance(user, dict) else None
    if value is None:
        value = update.get("user_id")  # the Go client's fixtures carry it at the top too
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("the update names no user.user_id")
    return str(value)


def _seconds(value: object, now: float) -> float:
    """MAX times are Unix milliseconds."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 10**14:
        return now
    return value / 1000.0


__all__ = ["DEFAULT_API_URL", "MaxOverrides", "MaxProvider", "MaxSettings"]
