"""`type: whatsapp_cloud`: Meta's WhatsApp Business Cloud API (providers.md §1).

Out: `POST {api_url}/{api_version}/{phone_number_id}/messages` with `Authorization:
Bearer <access_token>`; free-form `type: text` unless a template is named (per step in
the policy's `options:`, or per message in `Message.overrides["whatsapp"]`), then
`type: template`. Our attempt id travels in `biz_opaque_callback_data`, which Meta
echoes in every status webhook, so a receipt names its attempt even when the send's
answer was lost.

Answers: `messages[0].id` (`wamid.…`) is the provider message id. A refusal is the
Graph error envelope, classified by its `code` alone (the HTTP status paired with most
codes is unconfirmed; it decides only when the body is not the envelope). An answer
nobody classified fails safe: permanent, with the raw answer (bounded) in the error.

In: `GET` is the verification handshake (`hub.mode=subscribe` and our `verify_token`:
200 with the raw `hub.challenge`; anything else 403). `POST` is a status webhook signed
`X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, raw body)>`, checked in
constant time before the body is read; `sent`, `delivered`, `read` (and `played`, a
read) and `failed` (with `errors[0].code`) become receipts, de-duplicated on message
id and status.

The Cloud API has no validity period or TTL on a text or template message, so the
step's `deadline_ts` cannot be passed on (docs/providers/whatsapp.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar, Final

import httpx
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from cascade_notify._duration import Duration
from cascade_notify.clock import Clock
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnreachableError,
)
from cascade_notify.models import Receipt, ReceiptStatus
from cascade_notify.providers._http import Answer, HttpClient, HttpProvider, json_body, load_json
from cascade_notify.providers._http import retry_after as header_wait
from cascade_notify.providers._signing import BadSignature, hmac_hex, same, wall_time
from cascade_notify.providers.base import (
    Inbound,
    ProviderOverrides,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
    WebhookResponse,
)

GRAPH_API: Final = "https://graph.facebook.com"
MAX_TEXT: Final = 4096
_MAX_CALLBACK_DATA: Final = 512
_MAX_ID: Final = 256
_MAX_RECEIPTS: Final = 1000
_MAX_CHALLENGE: Final = 1024
_READ: Final = 16 * 1024
_STATUSES: Final = {
    "sent": ReceiptStatus.SENT,
    "delivered": ReceiptStatus.DELIVERED,
    "read": ReceiptStatus.READ,
    "played": ReceiptStatus.READ,  # a voice message's first play: it was seen (§0.2)
    "failed": ReceiptStatus.FAILED,
}

# providers.md §1.5, by Graph error code
WINDOW_CLOSED: Final = 131047
SPAM_LIMIT: Final = 131048
ACCOUNT: Final = frozenset(
    {0, 3, 10, 190, 368, 131031, 131064, 131037, 131042, 131045, 133010, *range(200, 300)}
)
TRANSIENT: Final = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131056, 131057})
#: The least wait each throughput code asks for, in seconds (a Retry-After may say more).
MIN_WAIT: Final[Mapping[int, float]] = {130429: 1.0, 131056: 6.0, SPAM_LIMIT: 3600.0}
UNREACHABLE: Final = frozenset({131026, 131049, 131050, 130472, 130497})
PERMANENT: Final = frozenset(
    {100, 131008, 131009, 131021, 131030, 131051, 131052, 131053, 135000}
    | {132000, 132001, 132005, 132007, 132008, 132012, 132015, 132016}
)
_VERSION: Final = re.compile(r"v[0-9]+\.[0-9]+")


def _check_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return url.rstrip("/")


def _check_version(value: str) -> str:
    if not _VERSION.fullmatch(value):
        raise ValueError(f"{value!r} is not a Graph API version such as v23.0")
    return value


def _as_text(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Parameter = Annotated[str, BeforeValidator(_as_text), Field(min_length=1)]
Parameters = tuple[Parameter, ...] | dict[str, Parameter]


class WhatsAppSettings(ProviderSettings):
    """Settings of `type: whatsapp_cloud`; each may be `${ENV}` in YAML."""

    phone_number_id: Annotated[str, Field(pattern=r"^[0-9]{1,32}$")] = Field(
        description="The WhatsApp Business phone number id messages are sent from."
    )
    access_token: SecretStr = Field(
        description="The access token requests carry (`Authorization: Bearer`)."
    )
    app_secret: SecretStr = Field(
        description="The Meta app's secret: status webhooks are signed with it "
        "(`X-Hub-Signature-256`)."
    )
    verify_token: SecretStr = Field(
        description="What the webhook's verification handshake (`hub.verify_token`) must carry."
    )
    api_url: Annotated[str, AfterValidator(_check_url)] = Field(
        default=GRAPH_API, description="The Graph API root (an emulator's in tests)."
    )
    api_version: Annotated[str, AfterValidator(_check_version)] = Field(
        default="v23.0", description="The Graph API version in each request path, such as `v23.0`."
    )
    timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="How long one API call may take before it counts as a timeout (transient, "
        "or an unknown outcome once the request went out).",
    )


class WhatsAppTemplate(BaseModel):
    """An approved template: its name, language code and body parameters (positional, or
    by name for templates made with named parameters); `components` are passed on as
    they are, after the body (a header, buttons)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        description="The approved template's name."
    )
    language: str | None = Field(default=None, description="Its language code (`ru`, `en_US`).")
    parameters: Parameters = Field(
        default=(),
        description="The body's parameters: a list (positional) or a mapping (named "
        "parameters); numbers are taken as text.",
    )
    components: tuple[dict[str, Any], ...] = Field(
        default=(),
        description="Further template components (a header, buttons), passed on as they are "
        "after the body.",
    )


def _as_template(value: object) -> object:
    return {"name": value} if isinstance(value, str) else value


class WhatsAppOverrides(ProviderOverrides):
    """`options: {<provider>: …}` of a step and `Message.overrides["whatsapp"]`.

    `template` is a name or a mapping (`name`, `language`, `parameters`, `components`);
    the top-level `language` and `parameters` fill it, and win over its own, so a step
    can name the template and each message give its parameters. `preview_url` asks
    for a link preview on free-form text.
    """

    template: Annotated[WhatsAppTemplate | None, BeforeValidator(_as_template)] = Field(
        default=None,
        description="An approved template to send instead of free-form text: its name, or a "
        "mapping.",
    )
    language: str | None = Field(
        default=None, description="The template's language; wins over the template's own."
    )
    parameters: Parameters | None = Field(
        default=None,
        description="The template's body parameters; win over the template's own, so a step "
        "names the template and each message gives its parameters.",
    )
    preview_url: bool = Field(
        default=False, description="`true`: ask for a link preview on free-form text."
    )


class WhatsAppCloudProvider(HttpProvider):
    """`type: whatsapp_cloud`. Pass `client=` (an `httpx.AsyncClient`) to send through it;
    without one requests go out on the base's own aiohttp session."""

    type_name = "whatsapp_cloud"
    default_channel = "whatsapp"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(ReceiptStatus)
    max_length = MAX_TEXT
    webhook_methods = frozenset({"GET", "POST"})
    Settings = WhatsAppSettings
    Overrides = WhatsAppOverrides
    settings: WhatsAppSettings

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
        s = self.settings
        self.url = f"{s.api_url}/{s.api_version}/{s.phone_number_id}/messages"
        self._headers = {
            "authorization": f"Bearer {s.access_token.get_secret_value()}",
            "content-type": "application/json",
        }
        self._app_secret = s.app_secret.get_secret_value().encode("utf-8")

    # out

    async def send(self, request: SendRequest) -> SendResult:
        """Post one message; its `wamid.` id, or the classified refusal."""
        payload = self.payload(request)
        try:
            body = json_body(payload)
        except ValueError as exc:
            raise PermanentError(
                f"the message cannot be sent as JSON: {exc}", provider=self.name, code="not_json"
            ) from None
        answer = await self.request(
            "POST", self.url, content=body, headers=self._headers, limit=_READ
        )
        if answer.ok:
            message_id = _message_id(answer)
            if message_id is not None:
                return SendResult(message_id)
        raise self.classify(answer, template=payload["type"] == "template")

    def payload(self, request: SendRequest) -> dict[str, Any]:
        """The request body: a template if one is named, else free-form text."""
        overrides = request.overrides
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": request.address.removeprefix("+"),
        }
        template = (
            overrides.template
            if isinstance(overrides, WhatsAppOverrides) and overrides.template is not None
            else None
        )
        if template is None:
            preview = isinstance(overrides, WhatsAppOverrides) and overrides.preview_url
            payload["type"] = "text"
            payload["text"] = {"preview_url": preview, "body": request.text}
        else:
            assert isinstance(overrides, WhatsAppOverrides)
            payload["type"] = "template"
            payload["template"] = self._template(template, overrides, request)
        if len(request.attempt_id.encode()) <= _MAX_CALLBACK_DATA:
            payload["biz_opaque_callback_data"] = request.attempt_id
        return payload

    def _template(
        self, template: WhatsAppTemplate, overrides: WhatsAppOverrides, request: SendRequest
    ) -> dict[str, Any]:
        language = overrides.language or template.language or request.recipient.locale
        if not language:
            raise PermanentError(
                f"template {template.name!r} needs a language: give `language` in the "
                "template or the overrides, or a locale on the recipient",
                provider=self.name,
                code="no_language",
            )
        params = overrides.parameters if overrides.parameters is not None else template.parameters
        components: list[dict[str, Any]] = []
        if params:
            components.append({"type": "body", "parameters": list(_body_parameters(params))})
        components.extend(template.components)
        out: dict[str, Any] = {
            "name": template.name,
            "language": {"code": language.replace("-", "_")},
        }
        if components:
            out["components"] = components
        return out

    def classify(self, answer: Answer, *, template: bool = False) -> ProviderError:
        """The error an answer means: by the Graph envelope's `code`, else by HTTP status
        (a body that is not the envelope), else permanent with the raw answer."""
        error = _graph_error(answer)
        if error is None:
            raw = f"HTTP {answer.status}: {answer.text()}"
            if answer.ok:
                return PermanentError(
                    f"an answer with no message id: {raw}", provider=self.name, code="unclassified"
                )
            return self.refusal(answer, raw)
        code, text = error
        name, tag = self.name, str(code)
        if code == WINDOW_CLOSED:
            if template:
                return PermanentError(text, provider=name, code=tag)
            return UnreachableError(
                "the 24-hour customer service window is closed: free-form text is refused "
                f"outside it, and no template is configured for this step ({text})",
                provider=name,
                code=tag,
            )
        if code in TRANSIENT or code == SPAM_LIMIT:
            hint = header_wait(answer.headers.get("retry-after"), wall_time())
            wait = max(hint or 0.0, MIN_WAIT.get(code, 0.0)) or None
            return TransientError(text, provider=name, code=tag, retry_after=wait)
        if code in ACCOUNT:
            return PermanentError(text, provider=name, code=tag, account=True)
        if code in UNREACHABLE:
            return UnreachableError(text, provider=name, code=tag)
        if code in PERMANENT:
            return PermanentError(text, provider=name, code=tag)
        return PermanentError(
            f"an error code nobody classified: HTTP {answer.status}: {answer.text()}",
            provider=name,
            code=tag,
            account=answer.status in (401, 403),
        )

    # in

    async def receive(self, request: WebhookRequest) -> Inbound:
        """The GET handshake's challenge, or the receipts of a signed status webhook."""
        if request.method.upper() == "GET":
            return Inbound(answer=self.handshake(request.query))
        self.check(request)
        return Inbound(receipts=self.parse(request.body))

    def handshake(self, query: Mapping[str, str]) -> WebhookResponse:
        """200 with the raw `hub.challenge` for a subscribe with our verify token; else
        `BadSignature` answered 403."""
        challenge = query.get("hub.challenge", "")
        if query.get("hub.mode") != "subscribe":
            raise BadSignature("hub.mode is not subscribe", status=403)
        expected = self.settings.verify_token.get_secret_value()
        if not same(query.get("hub.verify_token", ""), expected):
            raise BadSignature("hub.verify_token does not match", status=403)
        if not challenge or len(challenge) > _MAX_CHALLENGE:
            raise BadSignature("hub.challenge is missing or too long", status=403)
        return WebhookResponse.text(challenge)

    def check(self, request: WebhookRequest) -> None:
        """`X-Hub-Signature-256` over the raw body, in constant time (401 missing, 403 wrong,
        as Meta's reference receivers answer)."""
        given = request.headers.get("x-hub-signature-256", "")
        if not given:
            raise BadSignature("no X-Hub-Signature-256 header")
        expected = "sha256=" + hmac_hex(self._app_secret, request.body)
        if not same(given.strip(), expected):
            raise BadSignature("X-Hub-Signature-256 does not match", status=403)

    def parse(self, body: bytes) -> list[Receipt]:
        """Receipts from a verified body: every `statuses[]` item of every entry and change;
        messages and system errors carry none. ValueError if malformed."""
        data = load_json(body)
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        now = self.clock.now()
        receipts = [self._receipt(item, now) for item in _statuses(data)]
        found = [r for r in receipts if r is not None]
        if len(found) > _MAX_RECEIPTS:
            raise ValueError(f"at most {_MAX_RECEIPTS} statuses per request")
        return found

    def _receipt(self, item: object, now: float) -> Receipt | None:
        if not isinstance(item, dict):
            raise ValueError("a status must be a JSON object")
        message_id, status = item.get("id"), item.get("status")
        if not isinstance(message_id, str) or not 0 < len(message_id) <= _MAX_ID:
            raise ValueError(f"statuses[].id must be a string of 1 to {_MAX_ID} characters")
        if not isinstance(status, str):
            raise ValueError("statuses[].status must be a string")
        kind = _STATUSES.get(status)
        if kind is None:
            return None  # a status this library does not track (deleted, warning…)
        opaque = item.get("biz_opaque_callback_data")
        code = error = None
        if kind is ReceiptStatus.FAILED:
            code, error = _failure(item.get("errors"))
        return Receipt(
            provider=self.name,
            provider_message_id=message_id,
            status=kind,
            ts=_seconds(item.get("timestamp"), now),
            code=code,
            error=error,
            attempt_id=opaque if isinstance(opaque, str) and 0 < len(opaque) <= _MAX_ID else None,
        )


def _body_parameters(params: Parameters) -> Iterator[dict[str, str]]:
    if isinstance(params, dict):
        for key, value in params.items():
            yield {"type": "text", "parameter_name": key, "text": value}
    else:
        for value in params:
            yield {"type": "text", "text": value}


def _message_id(answer: Answer) -> str | None:
    try:
        data = answer.json()
    except ValueError:
        return None
    messages = data.get("messages") if isinstance(data, dict) else None
    first = messages[0] if isinstance(messages, list) and messages else None
    found = first.get("id") if isinstance(first, dict) else None
    # `message_status` (unconfirmed) may ride along: it is not read
    return found if isinstance(found, str) and 0 < len(found) <= _MAX_ID else None


def _graph_error(answer: Answer) -> tuple[int, str] | None:
    """`(code, text)` of a Graph error envelope, or None if the body is not one."""
    try:
        data = answer.json()
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    assert isinstance(error, dict)
    parts = [str(error.get("message") or f"(#{code})")]
    subcode = error.get("error_subcode")
    if isinstance(subcode, int) and not isinstance(subcode, bool):
        parts.append(f"subcode {subcode}")  # e.g. 463 token expired (unconfirmed)
    details = error.get("error_data")
    if isinstance(details, dict) and isinstance(details.get("details"), str):
        parts.append(details["details"])
    return code, ": ".join(parts)[:500]


def _statuses(data: dict[str, Any]) -> Iterator[object]:
    entries = data.get("entry", [])
    if not isinstance(entries, list):
        raise ValueError("entry must be a list")
    for entry in entries:
        changes = entry.get("changes", []) if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            raise ValueError("entry[].changes must be a list")
        for change in changes:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                raise ValueError("entry[].changes[].value must be an object")
            statuses = value.get("statuses", [])
            if not isinstance(statuses, list):
                raise ValueError("statuses must be a list")
            yield from statuses


def _failure(errors: object) -> tuple[str | None, str | None]:
    first = errors[0] if isinstance(errors, list) and errors else None
    if not isinstance(first, dict):
        return None, None
    code = first.get("code")
    words = [first.get("title"), first.get("message")]
    details = first.get("error_data")
    if isinstance(details, dict):
        words.append(details.get("details"))
    text = ": ".join(dict.fromkeys(w for w in words if isinstance(w, str) and w))
    return (
        str(code) if isinstance(code, int) and not isinstance(code, bool) else None,
        text[:1000] or None,
    )


def _seconds(value: object, now: float) -> float:
    # a string of Unix seconds (§1.6); a number is taken too
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12:
        return float(value)
    return now


__all__ = [
    "WhatsAppCloudProvider",
    "WhatsAppOverrides",
    "WhatsAppSettings",
    "WhatsAppTemplate",
]
