"""`type: viber_bot` against the Viber REST Bot API emulator over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cascade_notify import DeliveryStatus, Message, Recipient, load_config
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.events import Event
from cascade_notify.models import ReceiptStatus, SignalKind
from cascade_notify.providers import registry
from cascade_notify.providers._signing import BadSignature, hmac_hex
from cascade_notify.providers.base import WebhookRequest
from cascade_notify.providers.viber import EVENT_TYPES, ViberBotProvider, ViberSettings
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import ViberEmulator
from cascade_notify.testing.emulators.fixtures import EmulatorFactory

from ._support import PHONE, answered, feed, request, served

USER = "01234567890A="


@pytest.fixture
async def vb(emulators: EmulatorFactory) -> ViberEmulator:
    return await emulators(ViberEmulator)


def make(emu: ViberEmulator, clock: FakeClock, **kw: Any) -> ViberBotProvider:
    values = {k: v for k, v in emu.settings().items() if k != "type"}
    values.update(kw.pop("settings", {}))
    return ViberBotProvider("viber", ViberSettings.model_validate(values), clock=clock, **kw)


@pytest.fixture
async def provider(vb: ViberEmulator, fake_clock: FakeClock) -> AsyncIterator[ViberBotProvider]:
    made = make(vb, fake_clock)
    yield made
    await made.aclose()


def vb_request(**kw: Any) -> Any:
    return request(ViberBotProvider, "viber", USER, **kw)


# sending


async def test_send_body_and_exact_token(vb: ViberEmulator, provider: ViberBotProvider) -> None:
    """The text goes with our sender name, the token in its header and our attempt id in
    `tracking_data`; the 64-bit `message_token` comes back digit for digit."""
    result = await provider.send(vb_request())
    [sent] = vb.requests
    assert sent.path == "/pa/send_message"
    assert sent.headers["x-viber-auth-token"] == vb.auth_token
    assert sent.json() == {
        "receiver": USER,
        "type": "text",
        "text": "Your parcel A-1234 has arrived.",
        "sender": {"name": "Acme Delivery"},
        "tracking_data": "att_1",
    }
    token = vb.outbox[0].data["token"]
    assert token > 2**53 and token % 2 == 1  # a float would have lost the last digits
    assert result.provider_message_id == str(token)


@pytest.mark.parametrize("suffix", ["", "/", "/pa", "/pa/"])
async def test_api_root_or_pa_base(vb: ViberEmulator, fake_clock: FakeClock, suffix: str) -> None:
    """`api_url` may be the API root or its `/pa` base."""
    provider = make(vb, fake_clock, settings={"api_url": vb.api_url + suffix})
    try:
        await provider.send(vb_request())
    finally:
        await provider.aclose()
    assert vb.requests[-1].path == "/pa/send_message"


async def test_keyboard_and_min_api_version(vb: ViberEmulator, provider: ViberBotProvider) -> None:
    """Viber's own overrides, from the step or the message, go into the body as given."""
    keyboard = {"Type": "keyboard", "Buttons": [{"Text": "Track", "ActionBody": "track"}]}
    await provider.send(
        vb_request(
            options={"min_api_version": 3},
            overrides={"viber": {"keyboard": keyboard, "text": "Tracked"}},
        )
    )
    body = vb.requests[-1].json()
    assert (body["keyboard"], body["min_api_version"], body["text"]) == (keyboard, 3, "Tracked")


async def test_through_an_injected_httpx_client(vb: ViberEmulator, fake_clock: FakeClock) -> None:
    """An injected `httpx.AsyncClient` carries the request; the token stays exact."""
    async with httpx.AsyncClient() as client:
        provider = make(vb, fake_clock, client=client)
        assert provider.injected
        result = await provider.send(vb_request())
        await provider.aclose()
        assert not client.is_closed
    assert result.provider_message_id == str(vb.outbox[0].data["token"])


# errors: every row of providers.md §3.3

TABLE = [
    ("invalid_url", {}, PermanentError, "1", False),
    ("bad_token", {}, PermanentError, "2", True),
    ("bad_data", {}, PermanentError, "3", False),
    ("missing_data", {}, PermanentError, "4", False),
    ("not_registered", {}, UnreachableError, "5", None),
    ("not_subscribed", {}, UnreachableError, "6", "unsubscribed"),
    ("account_blocked", {}, PermanentError, "7", True),
    ("account_not_found", {}, PermanentError, "8", True),
    ("suspended", {}, PermanentError, "9", True),
    ("webhook_not_set", {}, PermanentError, "10", True),
    ("no_suitable_device", {}, UnreachableError, "11", None),
    ("rate_limited", {}, TransientError, "12", None),
    ("api_version", {}, UnreachableError, "13", None),
    ("incompatible", {}, PermanentError, "14", False),
    ("not_authorized", {}, PermanentError, "15", True),
    *[("bad_data", {"code": c}, PermanentError, str(c), False) for c in range(16, 21)],
    ("general_error", {}, TransientError, "999", None),
    ("server_error", {}, TransientError, "500", None),
]


@pytest.mark.parametrize(("script", "options", "kind", "code", "extra"), TABLE)
async def test_every_status(
    vb: ViberEmulator,
    provider: ViberBotProvider,
    script: str,
    options: dict[str, Any],
    kind: type[ProviderError],
    code: str,
    extra: Any,
) -> None:
    """Each status (HTTP 200 with `status`) and the HTTP 500 get their class (extra:
    `account` of a permanent one, `gone` of an unreachable one)."""
    vb.script(USER, {"do": script, **options})
    with pytest.raises(kind) as caught:
        await provider.send(vb_request())
    assert type(caught.value) is kind and caught.value.code == code
    if kind is PermanentError:
        assert caught.value.account is extra
    if kind is UnreachableError:
        assert caught.value.gone == extra


async def test_general_error_is_retried_once(vb: ViberEmulator, provider: ViberBotProvider) -> None:
    """A status past the table is transient the first time for a delivery, permanent the
    second ("retry once"); another delivery starts afresh."""
    vb.script("*", "general_error")
    with pytest.raises(TransientError):
        await provider.send(vb_request(attempt_id="a1"))
    with pytest.raises(PermanentError, match="again"):
        await provider.send(vb_request(attempt_id="a1"))
    with pytest.raises(TransientError):
        await provider.send(vb_request(attempt_id="a2"))


async def test_hang_up_is_an_unknown_outcome(vb: ViberEmulator, provider: ViberBotProvider) -> None:
    vb.script(USER, "hang_up")
    with pytest.raises(UnknownOutcomeError):
        await provider.send(vb_request())


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(200, json={"status": 0, "status_message": "ok"}),
        httpx.Response(200, json={"status": 0, "message_token": 5.741311803571721e18}),
        httpx.Response(200, json=[1, 2]),
    ],
)
async def test_answers_nobody_classified(response: httpx.Response) -> None:
    """An OK answer with no usable token (none, a float, not JSON) fails safe:
    permanent, the raw answer in the error."""
    settings = ViberSettings.model_validate({"auth_token": "t", "sender_name": "Acme"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: response)) as client:
        provider = ViberBotProvider("viber", settings, client=client)
        with pytest.raises(PermanentError) as caught:
            await provider.send(vb_request())
    assert caught.value.code == "unclassified"
    assert response.text[:12] in str(caught.value)


# callbacks


@pytest.mark.parametrize(
    ("script", "statuses"),
    [
        ("read", ["delivered", "read"]),
        ("read_only", ["read"]),
        ("out_of_order", ["read", "delivered"]),
        ("fail_receipt", ["failed"]),
    ],
)
async def test_callbacks_become_receipts(
    vb: ViberEmulator,
    provider: ViberBotProvider,
    fake_clock: FakeClock,
    script: str,
    statuses: list[str],
) -> None:
    """`delivered`, `seen` (a read) and `failed` (with `desc`) name the message by its
    exact token, at the callback's millisecond time."""
    vb.script(USER, {"do": script, "detail": "client gone"} if script == "fail_receipt" else script)
    result = await provider.send(vb_request())
    await fake_clock.advance(3)
    got = [r for hook in vb.webhooks for r in (await feed(provider, hook)).receipts]
    assert [r.status.value for r in got] == statuses
    assert {r.provider_message_id for r in got} == {result.provider_message_id}
    assert [r.ts for r in got] == [hook.json()["timestamp"] / 1000 for hook in vb.webhooks]
    failed = [r for r in got if r.status is ReceiptStatus.FAILED]
    assert [r.error for r in failed] == (["client gone"] if failed else [])


async def test_duplicates_share_a_receipt_id(
    vb: ViberEmulator, provider: ViberBotProvider, fake_clock: FakeClock
) -> None:
    """A callback Viber sends twice is the same receipt, so the store keeps one."""
    vb.script(USER, "duplicate_receipts")
    await provider.send(vb_request())
    await fake_clock.advance(3)
    got = [r for hook in vb.webhooks for r in (await feed(provider, hook)).receipts]
    assert [r.status for r in got] == [ReceiptStatus.DELIVERED] * 2
    assert got[0].receipt_id == got[1].receipt_id


async def test_events_become_signals(vb: ViberEmulator, provider: ViberBotProvider) -> None:
    """`unsubscribed` is a `gone` signal; `conversation_started` with a context links the
    user to that recipient id; without one, `subscribed` and `message` bring nothing."""
    inbound = [
        await feed(provider, hook)
        for name, data in [
            ("unsubscribed", {}),
            ("conversation_started", {"context": "anna"}),
            ("conversation_started", {}),
            ("subscribed", {}),
            ("message", {"text": "Thanks!"}),
        ]
        for hook in await vb.event(name, USER, **data)
    ]
    gone, linked, *nothing = inbound
    [signal] = gone.signals
    assert (signal.kind, signal.address, signal.reason, signal.channel) == (
        SignalKind.GONE,
        USER,
        "unsubscribed",
        "viber",
    )
    [link] = linked.signals
    assert (link.kind, link.address, link.token) == (SignalKind.LINKED, USER, "anna")
    assert link.recipient_id is None  # the notifier checks the token and names the recipient
    assert all(not i.signals and not i.receipts and i.answer is None for i in nothing)


def viber_signed(body: bytes, signature: str | None) -> WebhookRequest:
    headers = {} if signature is None else {"x-viber-content-signature": signature}
    return WebhookRequest("POST", "http://h/r", headers, body)


async def test_bad_signature(
    vb: ViberEmulator, provider: ViberBotProvider, fake_clock: FakeClock
) -> None:
    """A callback signed with another token, or not signed, is refused 401."""
    await provider.send(vb_request())
    vb.auth_token = "another-token"
    await fake_clock.advance(2)
    with pytest.raises(BadSignature) as caught:
        await feed(provider, vb.webhooks[0])
    assert caught.value.status == 401
    with pytest.raises(BadSignature):
        await provider.receive(viber_signed(vb.webhooks[0].body, None))


@pytest.mark.parametrize(
    "payload",
    [
        [1],
        {"no": "event"},
        {"event": "delivered", "message_token": 1.5e18},
        {"event": "unsubscribed"},
    ],
)
async def test_malformed_callbacks(provider: ViberBotProvider, payload: Any) -> None:
    """A verified callback of the wrong shape (a float token included) is a ValueError."""
    body = json.dumps(payload).encode()
    signature = hmac_hex(provider.settings.auth_token.get_secret_value().encode(), body)
    with pytest.raises(ValueError, match="must be"):
        await provider.receive(viber_signed(body, signature))


# the whole way: policy, notifier, set_webhook, signed callbacks, uvicorn

POLICY = """
providers:
  viber: {settings}
  sms: {{type: fake, channel: sms, behavior: deliver}}
policies:
  service:
    steps:
      - {{channel: viber, providers: [viber], wait_for: read, timeout: 10m}}
      - {{channel: sms, providers: [sms], timeout: 10m}}
"""


async def test_notifier_end_to_end(emulators: EmulatorFactory, fake_clock: FakeClock) -> None:
    """`set_webhook` to the notifier's endpoint passes Viber's signed check; a send is read
    by the emulator's `seen`; an unsubscribe comes in as a `gone` signal; a user who is
    not subscribed moves on to SMS at once."""
    vb = await emulators(ViberEmulator, require_webhook=True)
    async with served(POLICY.format(settings=json.dumps(vb.settings())), fake_clock) as (
        notifier,
        receipts,
    ):
        events: list[Event] = []
        notifier.subscribe(events.append)
        provider = notifier.providers["viber"]
        assert isinstance(provider, ViberBotProvider)
        assert await provider.set_webhook(f"{receipts}/viber") == list(EVENT_TYPES)
        assert vb.webhooks[0].kind == "webhook" and vb.webhooks[0].delivered
        with pytest.raises(PermanentError) as refused:
            await provider.set_webhook("http://127.0.0.1:9/nothing")
        assert refused.value.code == "1"
        vb.script(USER, "read")
        vb.script("gone.user", "not_subscribed")
        good = await notifier.send(Recipient(id="anna", viber=USER, sms=PHONE), Message(text="hi"))
        bad = await notifier.send(
            Recipient(id="boris", viber="gone.user", sms=PHONE), Message(text="hi")
        )
        await answered(notifier, fake_clock, [good.id, bad.id])
        await fake_clock.advance(3)
        await vb.event("unsubscribed", USER)
        good, bad = await run_until_final(notifier, fake_clock, [good.id, bad.id])
    assert (good.status, good.channel) == (DeliveryStatus.DELIVERED, "viber")
    [attempt] = good.attempts
    assert attempt.provider_message_id == str(vb.outbox[0].data["token"])
    assert [r.status.value for r in attempt.receipts] == ["delivered", "read"]
    assert (bad.status, bad.channel) == (DeliveryStatus.DELIVERED, "sms")
    assert (bad.attempts[0].code, bad.attempts[0].status.value) == ("6", "unreachable")
    gone = [e for e in events if e.kind == "signal" and e.status == "gone"]
    assert {e.detail for e in gone} == {"unsubscribed"}
    ours = [h for h in vb.webhooks if h.url == f"{receipts}/viber"]
    assert len(ours) > 3 and all(h.delivered for h in ours)


def test_registered_and_loaded_from_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """`type: viber_bot` is built in; the token may come from `${ENV}` and stays secret."""
    assert registry.get("viber_bot") is ViberBotProvider
    monkeypatch.setenv("VIBER_TOKEN", "token-from-env")
    config = load_config(
        """
providers:
  vb: {type: viber_bot, auth_token: "${VIBER_TOKEN}", sender_name: Acme, timeout: 3s}
policies:
  p:
    steps: [{channel: viber, providers: [vb], wait_for: read}]
"""
    )
    settings = config.providers["vb"].settings
    assert isinstance(settings, ViberSettings)
    assert settings.auth_token.get_secret_value() == "token-from-env"
    assert "token-from-env" not in repr(settings)
    assert (settings.api_url, settings.timeout) == ("https://chatapi.viber.com/pa", 3.0)
