"""`type: webhook`: settings, the body and headers out, the answer → outcome table, and
receipts in. (Transport failures: test_webhook_transport.py.)"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import json
import time
from typing import Any

import httpx
import pytest

from cascade_notify import (
    Message,
    PermanentError,
    PolicyError,
    ProviderError,
    ReceiptStatus,
    TransientError,
    UnreachableError,
    WaitFor,
)
from cascade_notify.policy import load_config
from cascade_notify.providers import registry
from cascade_notify.providers._signing import BadSignature
from cascade_notify.providers.base import WebhookRequest
from cascade_notify.providers.webhook import WebhookProvider, WebhookSettings
from cascade_notify.testing import FakeClock
from webhook_harness import (
    NEW_SECRET,
    SECRET,
    URL,
    provider,
    receipt,
    request,
    send_with,
    settings,
    sign,
)

# settings


def test_registered_as_webhook_on_app_by_default() -> None:
    """`type: webhook` is built in; it sends on `app` unless `channel:` says otherwise."""
    assert registry.get("webhook") is WebhookProvider
    config = load_config(f"""
providers:
  app: {{type: webhook, url: "{URL}", secret: "{SECRET}"}}
  crm: {{type: webhook, url: "{URL}", secret: ["{SECRET}", "{NEW_SECRET}"], channel: call,
         timeout: 3s, tolerance: 2m}}
policies:
  p:
    steps: [{{channel: app, providers: [app], wait_for: read}},
            {{channel: call, providers: [crm]}}]
""")
    assert config.providers["app"].channel == "app"
    crm = config.providers["crm"].settings
    assert isinstance(crm, WebhookSettings)
    assert (config.providers["crm"].channel, crm.timeout, crm.tolerance) == ("call", 3.0, 120.0)
    assert len(crm.secret) == 2
    assert WebhookProvider.can_satisfy(WaitFor.READ)


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "whsec_"),
        ("whsec_not*base64", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64"),
    ],
)
def test_bad_secret_is_refused_without_echoing_it(secret: str, says: str) -> None:
    """A malformed secret fails the policy load with a reason, and the secret is not shown."""
    with pytest.raises(PolicyError) as caught:
        load_config(f"""
providers:
  app: {{type: webhook, url: "{URL}", secret: "{secret}"}}
policies:
  p: {{steps: [{{channel: app, providers: [app]}}]}}
""")
    text = str(caught.value)
    assert "providers.app.secret" in text and says in text
    assert secret.removeprefix("whsec_") not in text


def test_bad_url_is_refused() -> None:
    """`url:` must be an http(s) URL."""
    with pytest.raises(ValueError, match="http"):
        settings(url="ftp://example.com/x")


def test_secret_never_in_repr() -> None:
    """Settings print masked secrets."""
    assert SECRET not in repr(settings()) and SECRET.removeprefix("whsec_") not in repr(settings())


# out


async def test_body_and_headers_out(fake_clock: FakeClock) -> None:
    """The message goes as JSON with Standard Webhooks headers; webhook-id is the attempt id,
    which is also the provider message id."""
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(202)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        result = await provider(fake_clock, client).send(
            request(
                "att_7",
                subject="Parcel",
                metadata={"order": "A-1"},
                overrides={"app": {"text": "In-app text", "deep_link": "app://parcel/A-1"}},
            )
        )
    assert result.provider_message_id == "att_7"
    [sent] = seen
    assert sent.method == "POST" and str(sent.url) == URL
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["webhook-id"] == "att_7"
    assert abs(int(sent.headers["webhook-timestamp"]) - time.time()) < 5  # wall time
    assert sent.headers["webhook-signature"].startswith("v1,")
    assert json.loads(sent.content) == {
        "type": "message",
        "message_id": "att_7",
        "delivery_id": "del_1",
        "channel": "app",
        "recipient": {"id": "u1", "address": "device-1", "locale": "ru"},
        "text": "In-app text",
        "subject": "Parcel",
        "category": "transactional",
        "metadata": {"order": "A-1"},
        "options": {"deep_link": "app://parcel/A-1"},
        "timestamp": "2026-01-01T00:00:00Z",
    }


async def test_rotation_signs_with_every_secret(fake_clock: FakeClock) -> None:
    """With two secrets the header carries two signatures, space-separated."""
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200)

    await send_with(fake_clock, handler, secret=[SECRET, NEW_SECRET])
    parts = seen[0].headers["webhook-signature"].split(" ")
    assert len(parts) == 2 and all(p.startswith("v1,") for p in parts)


async def test_metadata_that_is_not_json_is_permanent(fake_clock: FakeClock) -> None:
    """A message that cannot be JSON is a permanent error, and nothing is sent."""
    # (restored: Message itself refuses such metadata when built; a provider must still cope)
    unchecked = Message.restore({"text": "Your parcel has arrived.", "metadata": {"at": object()}})
    with pytest.raises(PermanentError, match="JSON"):
        await provider(fake_clock).send(dataclasses.replace(request(), message=unchecked))


# an HTTP date is the server's wall clock: a minute after ours, stamped when it answers
RETRY_DATE = "<an HTTP date a minute from now>"


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "expect"),
    [
        (200, {}, b"", None, None),
        (201, {}, b"", None, None),
        (204, {}, b"", None, None),
        (500, {}, b"", TransientError, {"retry_after": None}),
        (502, {}, b"", TransientError, {}),
        (503, {"retry-after": "7"}, b"", TransientError, {"retry_after": 7.0}),
        (503, {"retry-after": RETRY_DATE}, b"", TransientError, {"retry_after": 60.0}),
        (429, {"retry-after": "120"}, b"", TransientError, {"retry_after": 120.0}),
        (429, {"retry-after": "soon"}, b"", TransientError, {"retry_after": None}),
        (408, {}, b"", TransientError, {}),
        (
            400,
            {},
            b'{"error": "bad field", "code": "E1"}',
            PermanentError,
            {"account": False, "code": "E1"},
        ),
        (401, {}, b"", PermanentError, {"account": True, "code": "401"}),
        (403, {}, b"forbidden\n", PermanentError, {"account": True}),
        (404, {}, b"", PermanentError, {"account": False}),
        (422, {}, b"", PermanentError, {"account": False}),
        (410, {}, b'{"error": "no app installed"}', UnreachableError, {"code": "410"}),
        (301, {"location": "https://x"}, b"", PermanentError, {}),
    ],
)
async def test_answer_table(
    fake_clock: FakeClock,
    status: int,
    headers: dict[str, str],
    body: bytes,
    error: type[ProviderError] | None,
    expect: dict[str, Any],
) -> None:
    """The company's HTTP answer → what the cascade does about it."""

    def handler(req: httpx.Request) -> httpx.Response:
        if headers.get("retry-after") == RETRY_DATE:
            date = email.utils.formatdate(time.time() + 60, usegmt=True)
            return httpx.Response(status, headers={"retry-after": date}, content=body)
        return httpx.Response(status, headers=headers, content=body)

    if error is None:
        assert (await send_with(fake_clock, handler)).provider_message_id == "att_1"
        return
    with pytest.raises(error) as caught:
        await send_with(fake_clock, handler)
    assert type(caught.value) is error
    for name, value in expect.items():
        got = getattr(caught.value, name)
        if name == "retry_after" and value == 60.0 and headers.get("retry-after") == RETRY_DATE:
            assert got is not None and 58 <= got <= 60, got  # whole seconds, and time passes
            continue
        assert got == value, name
    if body.startswith(b"{"):
        assert json.loads(body)["error"] in str(caught.value)


# in


def incoming(body: bytes, headers: dict[str, str]) -> WebhookRequest:
    return WebhookRequest("POST", "http://x/receipts/app", headers, body)


def test_parse_one_receipt(fake_clock: FakeClock) -> None:
    """One object → one receipt, identified by the webhook-id."""
    body = receipt(
        "att_1", "failed", timestamp="2026-01-01T00:00:05Z", error="push expired", code="E_PUSH"
    )
    [got] = provider(fake_clock).parse(incoming(body, {"webhook-id": "w1"}))
    assert (got.provider, got.provider_message_id, got.status, got.receipt_id) == (
        "app",
        "att_1",
        ReceiptStatus.FAILED,
        "w1",
    )
    assert (got.ts, got.error, got.code) == (fake_clock.now() + 5, "push expired", "E_PUSH")


def test_parse_a_list(fake_clock: FakeClock) -> None:
    """A list → receipts `webhook-id:index`; a numeric or absent timestamp is taken as is
    or as now."""
    body = json.dumps(
        [
            {"message_id": "a", "status": "delivered", "timestamp": 1767225601},
            {"message_id": "a", "status": "read"},
        ]
    ).encode()
    got = provider(fake_clock).parse(incoming(body, {"webhook-id": "w9"}))
    assert [(r.receipt_id, r.status, r.ts) for r in got] == [
        ("w9:0", ReceiptStatus.DELIVERED, 1767225601.0),
        ("w9:1", ReceiptStatus.READ, fake_clock.now()),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"NaN",
        b'{"message_id": "a", "status": "read", "timestamp": Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
        b"[" + b"{}," * 1001 + b"{}]",
        b'{"status": "read"}',
        b'{"message_id": "", "status": "read"}',
        b'{"message_id": "a", "status": ["read"]}',
        b'{"message_id": "a", "status": "read", "error": 5}',
        b'{"message_id": "a", "status": "read", "code": true}',
        b'{"message_id": "a", "status": "read", "timestamp": -1}',
    ],
)
def test_parse_refuses_malformed(fake_clock: FakeClock, body: bytes) -> None:
    """Anything but receipts (NaN, deep nesting, too many, wrong types) is a ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011  (any ValueError: the handler's 400)
        provider(fake_clock).parse(incoming(body, {"webhook-id": "w"}))


def test_verify_accepts_any_valid_signature_among_several(fake_clock: FakeClock) -> None:
    """Rotation in: a receipt signed with the old or the new secret verifies; extra
    signatures with unknown versions or keys are skipped."""
    body = receipt("a", "read")
    receiver = provider(fake_clock, secret=[SECRET, NEW_SECRET])
    for secret in (SECRET, NEW_SECRET):
        headers = sign(secret, "w", body, time.time())
        headers["webhook-signature"] = "v1a,xyz v1,AAAA " + headers["webhook-signature"]
        assert receiver.check(incoming(body, headers)) == "w"
    with pytest.raises(BadSignature):
        provider(fake_clock, secret=SECRET).check(
            incoming(body, sign(NEW_SECRET, "w", body, time.time()))
        )


# two seconds inside or outside the 300 s tolerance: wall time moves while the test runs
@pytest.mark.parametrize(("offset", "ok"), [(-298, True), (298, True), (-302, False), (302, False)])
def test_tolerance(fake_clock: FakeClock, offset: int, ok: bool) -> None:
    """A timestamp within `tolerance` of wall time verifies; one outside does not (never
    the notifier's clock: a FakeClock test must interoperate with real signers)."""
    body = receipt("a", "read")
    headers = sign(SECRET, "w", body, time.time() + offset)
    if ok:
        assert provider(fake_clock).check(incoming(body, headers)) == "w"
    else:
        with pytest.raises(BadSignature):
            provider(fake_clock).check(incoming(body, headers))


@pytest.mark.parametrize("odd", [chr(0xD800), chr(0xDCFF), "ключ", "\x00"])  # lone surrogates
def test_verify_never_raises_on_odd_header_text(fake_clock: FakeClock, odd: str) -> None:
    """Header text no ASGI server produces (lone surrogates, non-latin-1) just fails."""
    body = receipt("a", "read")
    headers = sign(SECRET, "w", body, time.time())
    for name in headers:
        with pytest.raises(BadSignature):
            provider(fake_clock).check(incoming(body, {**headers, name: headers[name] + odd}))
