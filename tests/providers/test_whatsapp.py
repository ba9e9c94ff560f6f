"""`type: whatsapp_cloud` against the WhatsApp Cloud API emulator over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cascade_notify import DeliveryStatus, Message, Recipient, load_config
from cascade_notify.errors import (
    MessageError,
    PermanentError,
    PolicyError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.models import ReceiptStatus
from cascade_notify.providers import registry
from cascade_notify.providers._signing import BadSignature, hmac_hex
from cascade_notify.providers.base import WebhookRequest
from cascade_notify.providers.whatsapp import WhatsAppCloudProvider, WhatsAppSettings
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import WhatsAppEmulator
from cascade_notify.testing.emulators.fixtures import EmulatorFactory

from ._support import PHONE, answered, feed, request, served

TO = "79161234567"
TEMPLATE = {"name": "parcel_arrived", "language": "ru"}


@pytest.fixture
async def wa(emulators: EmulatorFactory) -> WhatsAppEmulator:
    return await emulators(WhatsAppEmulator)


def make(emu: WhatsAppEmulator, clock: FakeClock, **kw: Any) -> WhatsAppCloudProvider:
    values = {k: v for k, v in emu.settings().items() if k != "type"}
    settings = WhatsAppSettings.model_validate(values)
    return WhatsAppCloudProvider("whatsapp", settings, clock=clock, **kw)


@pytest.fixture
async def provider(
    wa: WhatsAppEmulator, fake_clock: FakeClock
) -> AsyncIterator[WhatsAppCloudProvider]:
    made = make(wa, fake_clock)
    yield made
    await made.aclose()


def wa_request(**kw: Any) -> Any:
    return request(WhatsAppCloudProvider, "whatsapp", PHONE, **kw)


# sending


async def test_free_form_text_body(wa: WhatsAppEmulator, provider: WhatsAppCloudProvider) -> None:
    """Without a template the message goes as `type: text`, our attempt id in
    `biz_opaque_callback_data`, on our own aiohttp session; the answer's wamid is the id."""
    assert not provider.injected
    result = await provider.send(wa_request())
    [message] = wa.outbox
    assert result.provider_message_id == message.id and message.id.startswith("wamid.")
    [sent] = wa.requests
    assert sent.path == f"/v23.0/{wa.phone_number_id}/messages"
    assert sent.headers["authorization"] == f"Bearer {wa.access_token}"
    assert sent.json() == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": TO,
        "type": "text",
        "text": {"preview_url": False, "body": "Your parcel A-1234 has arrived."},
        "biz_opaque_callback_data": "att_1",
    }


async def test_template_named_by_the_step(
    wa: WhatsAppEmulator, provider: WhatsAppCloudProvider
) -> None:
    """A step's `options` name the template; the message's overrides give its body
    parameters; numbers become text."""
    await provider.send(
        wa_request(
            options={"template": TEMPLATE},
            overrides={"whatsapp": {"parameters": ["A-1234", 7]}},
        )
    )
    body = wa.requests[-1].json()
    assert body["type"] == "template" and "text" not in body
    assert body["template"] == {
        "name": "parcel_arrived",
        "language": {"code": "ru"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "A-1234"}, {"type": "text", "text": "7"}],
            }
        ],
    }
    assert body["biz_opaque_callback_data"] == "att_1"


async def test_template_per_message_named_parameters_and_locale(
    wa: WhatsAppEmulator, provider: WhatsAppCloudProvider
) -> None:
    """`Message.overrides["whatsapp"]["template"]` as a bare name takes the recipient's
    locale as its language; named parameters keep their names."""
    await provider.send(
        wa_request(
            locale="en-US",
            overrides={"whatsapp": {"template": "order", "parameters": {"order_id": "A-1"}}},
        )
    )
    assert wa.requests[-1].json()["template"] == {
        "name": "order",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "parameter_name": "order_id", "text": "A-1"}],
            }
        ],
    }


async def test_template_without_a_language_fails_without_a_call(
    wa: WhatsAppEmulator, provider: WhatsAppCloudProvider
) -> None:
    """A template with no language anywhere is a permanent error before any request."""
    with pytest.raises(PermanentError, match="needs a language"):
        await provider.send(wa_request(overrides={"whatsapp": {"template": "order"}}))
    assert wa.requests == []


def test_overrides_are_typed() -> None:
    """An unknown key in the template is refused, naming the channel and key."""
    with pytest.raises(MessageError, match=r"\['whatsapp'\]\.template\.colour"):
        WhatsAppCloudProvider.check_overrides(
            {"template": {"name": "x", "colour": 1}}, channel="whatsapp"
        )


async def test_through_an_injected_httpx_client(
    wa: WhatsAppEmulator, fake_clock: FakeClock
) -> None:
    """An injected `httpx.AsyncClient` carries the request; it stays the caller's."""
    async with httpx.AsyncClient() as client:
        provider = make(wa, fake_clock, client=client)
        assert provider.injected
        result = await provider.send(wa_request())
        await provider.aclose()
        assert not client.is_closed
    assert result.provider_message_id == wa.outbox[0].id
    assert wa.requests[0].json()["text"]["body"] == "Your parcel A-1234 has arrived."


# errors, as the emulator answers them

EMULATED = [
    ("undeliverable", UnreachableError, "131026", None),
    ("window_closed", UnreachableError, "131047", None),
    ("rate_limited", TransientError, "130429", 1.0),
    ("pair_rate_limited", TransientError, "131056", 6.0),
    ("spam_limited", TransientError, "131048", 3600.0),
    ("marketing_limited", UnreachableError, "131049", None),
    ("opted_out", UnreachableError, "131050", None),
    ("not_allowed", PermanentError, "131030", False),
    ("template_missing", PermanentError, "132001", False),
    ("account_locked", PermanentError, "131031", True),
    ("bad_token", PermanentError, "190", True),
    ("invalid_parameter", PermanentError, "100", False),
    ("app_rate_limited", TransientError, "4", None),
    ("server_error", TransientError, "131000", None),
    ("unavailable", TransientError, "2", None),
]


@pytest.mark.parametrize(("script", "kind", "code", "extra"), EMULATED)
async def test_emulated_errors(
    wa: WhatsAppEmulator,
    provider: WhatsAppCloudProvider,
    script: str,
    kind: type[ProviderError],
    code: str,
    extra: Any,
) -> None:
    """Each named error of the emulator is classified by its Graph code (extra: the
    least `retry_after` of a transient one, `account` of a permanent one)."""
    wa.script(PHONE, script)
    with pytest.raises(kind) as caught:
        await provider.send(wa_request())
    assert type(caught.value) is kind and caught.value.code == code
    if kind is TransientError:
        assert caught.value.retry_after == extra
    if kind is PermanentError:
        assert caught.value.account is extra


async def test_window_closed_says_why(
    wa: WhatsAppEmulator, provider: WhatsAppCloudProvider
) -> None:
    """131047 on free-form text moves on (unreachable on this step) saying the window is
    closed; on a template it is a plain permanent error."""
    wa.script(PHONE, "window_closed")
    with pytest.raises(UnreachableError, match="customer service window is closed"):
        await provider.send(wa_request())
    with pytest.raises(PermanentError) as caught:
        await provider.send(wa_request(options={"template": TEMPLATE}))
    assert caught.value.code == "131047"


async def test_wrong_token_opens_the_breaker(
    emulators: EmulatorFactory, fake_clock: FakeClock
) -> None:
    """A token the API does not know is 190: permanent, about the account."""
    emu = await emulators(WhatsAppEmulator, access_token="another-token")
    values = {**emu.settings(), "access_token": "EAA-wrong"}
    values.pop("type")
    provider = WhatsAppCloudProvider("whatsapp", WhatsAppSettings.model_validate(values))
    try:
        with pytest.raises(PermanentError) as caught:
            await provider.send(wa_request())
    finally:
        await provider.aclose()
    assert (caught.value.code, caught.value.account) == ("190", True)
    assert "EAA-wrong" not in str(caught.value)


async def test_hang_up_is_an_unknown_outcome(
    wa: WhatsAppEmulator, provider: WhatsAppCloudProvider
) -> None:
    """The API read the request and hung up: the message may have gone out."""
    wa.script(PHONE, "hang_up")
    with pytest.raises(UnknownOutcomeError):
        await provider.send(wa_request())


async def test_nothing_listening_is_transient(fake_clock: FakeClock) -> None:
    """A refused connection sent nothing: transient."""
    settings = WhatsAppSettings.model_validate(
        {
            "phone_number_id": "1",
            "access_token": "t",
            "app_secret": "s",
            "verify_token": "v",
            "api_url": "http://127.0.0.1:9",
        }
    )
    provider = WhatsAppCloudProvider("whatsapp", settings, clock=fake_clock)
    try:
        with pytest.raises(TransientError):
            await provider.send(wa_request())
    finally:
        await provider.aclose()


# receipts


@pytest.mark.parametrize(
    ("script", "statuses"),
    [
        ("read", ["sent", "delivered", "read"]),
        ("read_only", ["sent", "read"]),
        ("out_of_order", ["read", "delivered", "sent"]),
    ],
)
async def test_status_webhooks_become_receipts(
    wa: WhatsAppEmulator,
    provider: WhatsAppCloudProvider,
    fake_clock: FakeClock,
    script: str,
    statuses: list[str],
) -> None:
    """Each signed status webhook is a receipt naming its message and our attempt, at the
    webhook's own time, with one id per status."""
    wa.script(PHONE, script)
    result = await provider.send(wa_request(attempt_id="att_7"))
    await fake_clock.advance(3)
    got = [r for hook in wa.webhooks for r in (await feed(provider, hook)).receipts]
    assert [r.status.value for r in got] == statuses
    assert {r.provider_message_id for r in got} == {result.provider_message_id}
    assert {r.attempt_id for r in got} == {"att_7"}
    assert len({r.receipt_id for r in got}) == len(got)
    assert [r.ts for r in got] == [int(hook.at) for hook in wa.webhooks]


async def test_failed_webhook_and_duplicates(
    wa: WhatsAppEmulator, provider: WhatsAppCloudProvider, fake_clock: FakeClock
) -> None:
    """A `failed` status carries `errors[0].code`; a duplicated webhook is the same
    receipt id, so the store keeps one."""
    wa.script(PHONE, [{"do": "fail_receipt", "code": 131026}, "duplicate_receipts"])
    await provider.send(wa_request(attempt_id="a1"))
    await provider.send(wa_request(attempt_id="a2"))
    await fake_clock.advance(3)
    got = [r for hook in wa.webhooks for r in (await feed(provider, hook)).receipts]
    failed = next(r for r in got if r.status is ReceiptStatus.FAILED)
    assert (failed.code, failed.attempt_id) == ("131026", "a1")
    assert "Message undeliverable" in (failed.error or "")
    delivered = [r.receipt_id for r in got if r.status is ReceiptStatus.DELIVERED]
    assert len(delivered) == 2 and len(set(delivered)) == 1


def signed(provider: WhatsAppCloudProvider, payload: Any) -> WebhookRequest:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac_hex(b"emulator-app-secret", body)
    return WebhookRequest("POST", "http://h/r", {"x-hub-signature-256": signature}, body)


async def test_batched_played_and_unknown_statuses(provider: WhatsAppCloudProvider) -> None:
    """Every status of every entry and change is read; `played` is a read; a status the
    library does not track, inbound messages and system errors bring nothing."""

    def change(*statuses: dict[str, Any]) -> dict[str, Any]:
        return {"field": "messages", "value": {"statuses": list(statuses), "errors": [{}]}}

    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": "1", "changes": [change({"id": "w1", "status": "played"})]},
            {
                "id": "2",
                "changes": [
                    change({"id": "w2", "status": "deleted"}, {"id": "w3", "status": "sent"}),
                    {"field": "messages", "value": {"messages": [{"id": "in"}]}},
                ],
            },
        ],
    }
    got = (await provider.receive(signed(provider, payload))).receipts
    assert [(r.provider_message_id, r.status.value, r.attempt_id) for r in got] == [
        ("w1", "read", None),
        ("w3", "sent", None),
    ]


@pytest.mark.parametrize("payload", [[], {"entry": {}}, {"entry": [{"changes": [{}]}]}])
async def test_malformed_bodies(provider: WhatsAppCloudProvider, payload: Any) -> None:
    """A verified body of the wrong shape is a ValueError (answered 400)."""
    with pytest.raises(ValueError, match="must be"):
        await provider.receive(signed(provider, payload))


async def test_bad_signature(
    wa: WhatsAppEmulator, provider: WhatsAppCloudProvider, fake_clock: FakeClock
) -> None:
    """A webhook signed with another secret is refused 403, a missing header 401."""
    wa.app_secret = "not-the-app-secret"
    await provider.send(wa_request())
    await fake_clock.advance(2)
    with pytest.raises(BadSignature) as caught:
        await feed(provider, wa.webhooks[0])
    assert caught.value.status == 403
    with pytest.raises(BadSignature) as missing:
        await provider.receive(WebhookRequest("POST", "http://h/r", {}, wa.webhooks[0].body))
    assert missing.value.status == 401


def get(**query: str) -> WebhookRequest:
    return WebhookRequest("GET", "http://h/r", {}, b"", query)


async def test_handshake(provider: WhatsAppCloudProvider) -> None:
    """A subscribe with our verify token gets the raw challenge; anything else 403."""
    ok = {"hub.mode": "subscribe", "hub.verify_token": "emulator-verify-token"}
    inbound = await provider.receive(get(**ok, **{"hub.challenge": "1158201444"}))
    assert inbound.answer is not None and not inbound.receipts
    assert (inbound.answer.status, inbound.answer.body) == (200, b"1158201444")
    for query in (
        {**ok, "hub.verify_token": "wrong", "hub.challenge": "1"},
        {**ok, "hub.mode": "unsubscribe", "hub.challenge": "1"},
        ok,
        {},
    ):
        with pytest.raises(BadSignature) as caught:
            await provider.receive(get(**query))
        assert caught.value.status == 403


# the whole way: policy, notifier, emulator, signed webhooks, uvicorn

POLICY = """
providers:
  whatsapp: {settings}
  sms: {{type: fake, channel: sms, behavior: deliver}}
policies:
  service:
    steps:
      - channel: whatsapp
        providers: [whatsapp]
        wait_for: delivered
        timeout: 10m
        options: {{whatsapp: {{template: {{name: parcel_arrived, language: ru}}}}}}
      - {{channel: sms, providers: [sms], timeout: 10m}}
"""


async def test_notifier_end_to_end(emulators: EmulatorFactory, fake_clock: FakeClock) -> None:
    """Through the notifier and its receipts endpoint: the handshake answers Meta's
    challenge; a template send is delivered by the emulator's signed webhook; an
    undeliverable number moves on to SMS at once with its reason."""
    wa = await emulators(WhatsAppEmulator, templates={"parcel_arrived": ["ru"]})
    policy = POLICY.format(settings=json.dumps(wa.settings()))
    async with served(policy, fake_clock) as (notifier, receipts):
        wa.webhook_url = f"{receipts}/whatsapp"
        assert await wa.verify_webhook()
        assert not await wa.verify_webhook(verify_token="wrong")
        wa.script("+79160000000", "undeliverable")
        text = Message(text="Parcel A-1234", overrides={"whatsapp": {"parameters": ["A-1234"]}})
        good = await notifier.send(Recipient(id="anna", whatsapp=PHONE, sms=PHONE), text)
        bad = await notifier.send(
            Recipient(id="boris", whatsapp="+79160000000", sms="+79160000000"),
            Message(text="hi", overrides={"whatsapp": {"parameters": ["B-1"]}}),
        )
        await answered(notifier, fake_clock, [good.id, bad.id])
        await fake_clock.advance(2)  # the emulator posts sent, then delivered
        good, bad = await run_until_final(notifier, fake_clock, [good.id, bad.id])
    assert (good.status, good.channel) == (DeliveryStatus.DELIVERED, "whatsapp")
    [attempt] = good.attempts
    assert attempt.provider_message_id == wa.outbox[0].id
    assert [r.status.value for r in attempt.receipts] == ["sent", "delivered"]
    assert all(h.delivered for h in wa.webhooks)
    assert (bad.status, bad.channel) == (DeliveryStatus.DELIVERED, "sms")
    assert (bad.attempts[0].code, bad.attempts[0].status.value) == ("131026", "unreachable")


def test_registered_and_loaded_from_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """`type: whatsapp_cloud` is built in; settings come from `${ENV}`, secrets stay
    secret; a step's template options are checked at load time."""
    assert registry.get("whatsapp_cloud") is WhatsAppCloudProvider
    monkeypatch.setenv("WA_TOKEN", "EAA-from-env")
    base = """
providers:
  wa: {type: whatsapp_cloud, phone_number_id: "1", access_token: "${WA_TOKEN}",
       app_secret: s, verify_token: v, timeout: 5s}
policies:
  p:
    steps:
      - {channel: whatsapp, providers: [wa], wait_for: read, options: {wa: OPTIONS}}
"""
    config = load_config(base.replace("OPTIONS", "{}"))
    settings = config.providers["wa"].settings
    assert isinstance(settings, WhatsAppSettings)
    assert settings.access_token.get_secret_value() == "EAA-from-env"
    assert "EAA-from-env" not in repr(settings)
    assert settings.api_url == "https://graph.facebook.com" and settings.timeout == 5.0
    with pytest.raises(PolicyError, match="template"):
        load_config(base.replace("OPTIONS", "{template: {language: ru}}"))
