"""`type: vk_community`: messages from a VK community (providers.md §3b).

Out: `POST {api_url}/method/messages.send` as a form (`peer_id`, `random_id`, `message`,
`v`, …) with `Authorization: Bearer <access_token>`. `random_id` is derived from our
attempt id (1 to 2**31-1, never 0), so every retry and every resend of one attempt carries
the same key and VK refuses to create a second message: `idempotent_sends = True`. The
provider message id is `"<peer_id>:<message_id>"`.

API errors arrive with HTTP 200 in an `error` envelope and are classified by
`error_code` (§3b.4); a code the table does not know fails safe as permanent, with the
answer bounded in its text. A non-JSON answer, a 5xx or a timeout is transient (safe to
repeat: the `random_id` is the same).

In (Callback API): the `confirmation` request is answered with the plain body
`confirmation_code`; every other event must carry the configured `secret` (constant
time; 403 otherwise) and is answered with the plain body `ok`, also when ignored.
`message_read` from the person is a `read` receipt (VK never reports `delivered`, so a
policy waiting for `delivered` on VK is refused at load time); `message_deny` is a
`gone` signal, `message_allow` with a `key` a `linked` one.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr

from cascade_notify._duration import Duration
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.models import Receipt, ReceiptStatus, Signal, SignalKind, WaitFor
from cascade_notify.providers._http import Answer, HttpProvider, form_body, load_json
from cascade_notify.providers._signing import BadSignature, same
from cascade_notify.providers.base import (
    Inbound,
    ProviderOverrides,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
    WebhookResponse,
)

DEFAULT_API_URL = "https://api.vk.com"
DEFAULT_API_VERSION = "5.199"
MAX_TEXT = 9000
#: `random_id` stays within 1…2**31-1: the accepted range is unconfirmed (int32 or int64).
RANDOM_ID_LIMIT = 2**31 - 1
# the peers whose recent messages a covering `message_read` marks read (in this process)
_RECENT_PEERS = 10_000
_RECENT_PER_PEER = 32

_TRANSIENT: dict[int, float | None] = {1: None, 6: 1.0, 9: 60.0, 10: None, 29: 3600.0}
_ACCOUNT = frozenset({5, 7, 15, 203, 27, 912, 985})
_PERMANENT = frozenset({14, 100, 104, 911, 913, 914, 921, 940, 943})
_UNREACHABLE = frozenset(
    {18, 113, 900, 901, 902, 917, 922, 925, 936, 944, 945, 946, 950, 987, 988, 1012}
)
#: Unreachable codes after which the address is unusable until the person allows again.
_GONE = {901: "not_allowed"}


class VkSettings(ProviderSettings):
    """Settings of `type: vk_community`."""

    access_token: SecretStr = Field(
        description="The community's access token with the messages permission "
        "(`Authorization: Bearer`)."
    )
    group_id: int = Field(gt=0, description="The community's id.")
    confirmation_code: str = Field(
        min_length=1,
        description="The string the Callback API's `confirmation` request is answered with "
        "(from the community's Callback API settings).",
    )
    secret: Annotated[SecretStr, Field(min_length=1, max_length=50)] = Field(
        description="The Callback API secret key every event must carry; others are refused (403)."
    )
    api_url: str = Field(
        default=DEFAULT_API_URL, description="The VK API root (an emulator's in tests)."
    )
    api_version: str = Field(
        default=DEFAULT_API_VERSION, description="The API version sent as `v` with each call."
    )
    timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="How long one API call may take before it counts as a timeout (transient, "
        "or an unknown outcome once the request went out).",
    )
    screen_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]{1,64}$")] | None = Field(
        default=None,
        description="The community's short name, for its deep links "
        "`https://vk.me/<name>?ref=...`; `null`: `club<group_id>`.",
    )


class VkOverrides(ProviderOverrides):
    """`Message.overrides["vk"]`: the message `intent` (and `subscribe_id` for
    newsletters), link snippets and mention pushes."""

    intent: (
        Literal[
            "default",
            "confirmed_notification",
            "account_update",
            "purchase_update",
            "customer_support",
            "non_promo_newsletter",
            "promo_newsletter",
            "bot_ad_invite",
            "bot_ad_promo",
            "game_notification",
        ]
        | None
    ) = Field(
        default=None,
        description="The message's `intent`, which VK requires for messages the person did "
        "not just ask for; `null`: none sent.",
    )
    subscribe_id: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="With a newsletter `intent`: the subscription the message belongs to.",
    )
    dont_parse_links: bool = Field(
        default=True, description="`true`: no snippets for links in the text."
    )
    disable_mentions: bool = Field(
        default=True, description="`true`: mentions in the text notify nobody."
    )


def random_id(group_id: int, attempt_id: str) -> int:
    """The `random_id` of an attempt: the same for every retry and resend of it, in
    1…2**31-1 (never 0, which reportedly turns VK's duplicate check off)."""
    digest = hashlib.sha256(f"{group_id}:{attempt_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % RANDOM_ID_LIMIT + 1


class VkProvider(HttpProvider):
    """`type: vk_community`: sends to a VK user id with a community token; takes the
    community's Callback API events."""

    type_name = "vk_community"
    default_channel = "vk"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset({ReceiptStatus.READ})
    max_length = MAX_TEXT
    idempotent_sends = True
    signals: ClassVar[bool] = True
    # VK documents no limit on `ref`; we keep to Telegram's
    link_payload = 64
    webhook_methods = frozenset({"POST"})
    Settings = VkSettings
    Overrides = VkOverrides
    settings: VkSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._url = self.settings.api_url.rstrip("/") + "/method/messages.send"
        self._recent: OrderedDict[str, list[int]] = OrderedDict()

    @classmethod
    def can_satisfy(cls, wait_for: WaitFor, settings: ProviderSettings | None = None) -> bool:
        """`accepted` and `read`; never `delivered`: VK reports no delivery, and a read
        alone must not pass for one at load time (issue 16)."""
        return wait_for is not WaitFor.DELIVERED

    async def send(self, request: SendRequest) -> SendResult:
        """`messages.send` with the attempt's `random_id`: a repeat cannot deliver twice."""
        if not request.address.isascii() or not request.address.isdigit():
            raise PermanentError(
                "a VK address is the person's numeric user id", provider=self.name, code="113"
            )
        overrides = request.overrides
        if not isinstance(overrides, VkOverrides):  # a SendRequest built by hand
            overrides = VkOverrides()
        fields = [
            ("peer_id", request.address),
            ("random_id", str(random_id(self.settings.group_id, request.attempt_id))),
            ("message", request.text),
            ("dont_parse_links", "1" if overrides.dont_parse_links else "0"),
            ("disable_mentions", "1" if overrides.disable_mentions else "0"),
        ]
        if overrides.intent is not None:
            fields.append(("intent", overrides.intent))
        if overrides.subscribe_id is not None:
            fields.append(("subscribe_id", str(overrides.subscribe_id)))
        fields.append(("v", self.settings.api_version))
        answer = await self.request(
            "POST",
            self._url,
            content=form_body(fields),
            headers={
                "authorization": f"Bearer {self.settings.access_token.get_secret_value()}",
                "content-type": "application/x-www-form-urlencoded",
            },
        )
        message_id = self._message_id(answer, request.address)
        self._remember(request.address, message_id)
        return SendResult(f"{request.address}:{message_id}")

    def _message_id(self, answer: Answer, peer: str) -> int:
        try:
            data = answer.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            if answer.ok:  # not VK's JSON: a proxy; repeating is safe (same random_id)
                raise TransientError(
                    f"HTTP {answer.status}, not JSON: {answer.text()}",
                    provider=self.name,
                    code="not_json",
                )
            raise self.refusal(answer, f"HTTP {answer.status}: {answer.text()}")
        error = data.get("error")
        if isinstance(error, dict):
            raise self._classified(error, answer)
        response = data.get("response")
        if isinstance(response, list):  # the `peer_ids` shape: one item per recipient
            item = next((i for i in response if isinstance(i, dict)), None)
            if item is not None and isinstance(item.get("error"), dict):
                raise self._classified(item["error"], answer)
            response = None if item is None else item.get("message_id")
        if isinstance(response, int) and not isinstance(response, bool) and response > 0:
            return response
        if not answer.ok:
            raise self.refusal(answer, f"HTTP {answer.status}: {answer.text()}")
        if response is not None:
            # what a suppressed duplicate answers is unconfirmed: it may be 0, and a
            # message with this random_id may exist; a resend of this attempt is safe
            raise UnknownOutcomeError(
                f"messages.send answered {answer.text(100)}",
                provider=self.name,
                code="no_message_id",
            )
        raise PermanentError(
            f"unrecognised answer: {answer.text()}", provider=self.name, code="unknown"
        )

    def _classified(self, error: dict[str, Any], answer: Answer) -> ProviderError:
        """An `error` envelope as one of ours, by `error_code` (§3b.4)."""
        raw = error.get("error_code", error.get("code"))
        code = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
        words = error.get("error_msg", error.get("description", ""))
        text = f"VK error {code}: {words if isinstance(words, str) else answer.text()}"[:500]
        name = str(code) if code is not None else "unknown"
        if code in _TRANSIENT:
            return TransientError(text, provider=self.name, code=name, retry_after=_TRANSIENT[code])
        if code in _ACCOUNT:
            return PermanentError(text, provider=self.name, code=name, account=True)
        if code in _PERMANENT:
            return PermanentError(text, provider=self.name, code=name)
        if code in _UNREACHABLE:
            return UnreachableError(text, provider=self.name, code=name, gone=_GONE.get(code))
        return PermanentError(
            f"unclassified VK error: {answer.text()}", provider=self.name, code=name
        )

    def _remember(self, peer: str, message_id: int) -> None:
        ids = self._recent.pop(peer, [])
        ids = [*ids[-(_RECENT_PER_PEER - 1) :], message_id]
        self._recent[peer] = ids
        while len(self._recent) > _RECENT_PEERS:
            self._recent.popitem(last=False)

    # in

    def deep_link(self, payload: str) -> str:
        """`https://vk.me/<screen_name>?ref=<payload>`: opens the community's chat; the
        person's first message (the Start button) comes as `message_new` with `ref`."""
        if not payload or len(payload) > 64:
            raise ValueError("a ref payload is 1 to 64 characters")
        name = self.settings.screen_name or f"club{self.settings.group_id}"
        return f"https://vk.me/{name}?ref={payload}"

    async def receive(self, request: WebhookRequest) -> Inbound:
        """One Callback API event: the confirmation handshake, or a `secret`-bearing event
        answered `ok`."""
        try:
            event = load_json(request.body)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise BadSignature("not a Callback API event: no secret to check", status=403)
        given = event.get("secret")
        expected = self.settings.secret.get_secret_value()
        if event["type"] == "confirmation":
            # whether VK sends `secret` here is unconfirmed: taken either way, if right
            if given is not None and not (isinstance(given, str) and same(given, expected)):
                raise BadSignature("Bad Secret", status=403)
            if event.get("group_id") != self.settings.group_id:
                raise BadSignature("confirmation for another community", status=403)
            return Inbound(answer=WebhookResponse.text(self.settings.confirmation_code))
        if not isinstance(given, str) or not same(given, expected):
            raise BadSignature("Bad Secret", status=403)
        group = event.get("group_id")
        if group is not None and group != self.settings.group_id:
            raise ValueError(f"an event of community {group}, not {self.settings.group_id}")
        ok = WebhookResponse.text("ok")
        kind, data = event["type"], event.get("object")
        if not isinstance(data, dict):
            return Inbound(answer=ok)
        now = self.clock.now()
        if kind == "message_read":
            return Inbound(receipts=self._reads(data, now), answer=ok)
        if kind in ("message_allow", "message_deny"):
            user = data.get("user_id")
            if isinstance(user, bool) or not isinstance(user, int) or user <= 0:
                raise ValueError(f"{kind} names no user_id")
            key = data.get("key")
            if kind == "message_deny":
                signal = Signal(
                    kind=SignalKind.GONE,
                    channel=self.channel,
                    address=str(user),
                    provider=self.name,
                    reason="message_deny",
                    ts=now,
                )
            elif isinstance(key, str) and key.strip():
                signal = Signal(
                    kind=SignalKind.LINKED,
                    channel=self.channel,
                    address=str(user),
                    provider=self.name,
                    reason="message_allow",
                    ts=now,
                    token=key,  # unverified: the notifier checks it
                )
            else:
                return Inbound(answer=ok)  # allowed without a key: nothing says whose
            return Inbound(signals=[signal], answer=ok)
        if kind == "message_new":
            linked = self._ref(data, now)
            return Inbound(signals=[linked] if linked else [], answer=ok)
        return Inbound(answer=ok)

    def _ref(self, data: dict[str, Any], now: float) -> Signal | None:
        """The `ref` of a person's message after a `vk.me/…?ref=` link, as a link."""
        message = data.get("message")
        if not isinstance(message, dict):
            return None
        ref, sender = message.get("ref"), message.get("from_id")
        if not isinstance(ref, str) or not ref.strip():
            return None
        if isinstance(sender, bool) or not isinstance(sender, int) or sender <= 0:
            return None
        return Signal(
            kind=SignalKind.LINKED,
            channel=self.channel,
            address=str(sender),
            provider=self.name,
            reason="ref",
            ts=now,
            token=ref,
        )

    def _reads(self, data: dict[str, Any], now: float) -> list[Receipt]:
        """`read` receipts: the message `read_message_id` names, and the earlier ones this
        process sent to that peer (everything up to it is read)."""
        peer, read_id, reader = (
            data.get("peer_id"),
            data.get("read_message_id"),
            data.get("from_id"),
        )
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (peer, read_id)):
            raise ValueError("message_read needs integer peer_id and read_message_id")
        assert isinstance(peer, int) and isinstance(read_id, int)
        if isinstance(reader, int) and reader < 0:
            return []  # the community read the person's messages (§3b.5)
        covered = [m for m in self._recent.get(str(peer), ()) if m < read_id]
        return [
            Receipt(
                provider=self.name,
                provider_message_id=f"{peer}:{message_id}",
                status=ReceiptStatus.READ,
                ts=now,
            )
            for message_id in (*covered, read_id)
        ]


__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_API_VERSION",
    "VkOverrides",
    "VkProvider",
    "VkSettings",
    "random_id",
]
