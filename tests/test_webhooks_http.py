"""The receipts endpoint over real HTTP (uvicorn on 127.0.0.1): one test per answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import pytest

from cascade_notify import (
    AttemptStatus,
    Delivery,
    DeliveryStatus,
    Message,
    Notifier,
    Recipient,
    StoreError,
)
from cascade_notify.policy import load_config
from cascade_notify.providers import registry
from cascade_notify.providers.base import (
    Inbound,
    Provider,
    WebhookRequest,
    WebhookResponse,
)
from cascade_notify.providers.webhook import WebhookProvider
from cascade_notify.testing import FakeClock
from cascade_notify.webhooks import asgi_app
from webhook_harness import OTHER_SECRET, SECRET, receipt, serve, sign

POLICY = f"""
providers:
  app: {{type: webhook, url: "http://127.0.0.1:9/inbox", secret: "{SECRET}", timeout: 5s}}
  sms: {{type: fake, channel: sms}}
policies:
  service:
    steps:
      - {{channel: app, providers: [app], wait_for: read, timeout: 10m}}
      - {{channel: sms, providers: [sms]}}
"""


def accept_all(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"ok": True})


@dataclass
class Stack:
    notifier: Notifier
    clock: FakeClock
    url: str
    http: httpx.AsyncClient
    delivery: Delivery

    @property
    def message_id(self) -> str:
        message_id = self.delivery.attempts[0].provider_message_id
        assert message_id is not None
        return message_id

    def signed(
        self, body: bytes, webhook_id: str = "msg_1", secret: str = SECRET, ts: float | None = None
    ) -> dict[str, str]:
        return sign(secret, webhook_id, body, time.time() if ts is None else ts)

    async def post(
        self, body: bytes, headers: dict[str, str], provider: str = "app"
    ) -> httpx.Response:
        return await self.http.post(
            f"{self.url}/receipts/{provider}", content=body, headers=headers
        )

    async def state(self) -> str:
        await self.clock.settle()
        return repr(await self.notifier.get(self.delivery.id))


async def make_notifier(
    clock: FakeClock, policy: str = POLICY, client: httpx.AsyncClient | None = None
) -> Notifier:
    config = load_config(policy)
    provider = WebhookProvider("app", config.providers["app"].settings, clock=clock, client=client)
    return Notifier(config, clock=clock, providers={"app": provider})


@pytest.fixture
async def stack(fake_clock: FakeClock) -> AsyncIterator[Stack]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(accept_all)) as out:
        notifier = await make_notifier(fake_clock, client=out)
        async with (
            notifier,
            serve(asgi_app(notifier, read_timeout=0.5)) as url,
            httpx.AsyncClient(timeout=5.0) as http,
        ):
            delivery = await notifier.send(
                Recipient(id="u1", app="device-1", sms="+79161234567"), Message(text="hi")
            )
            await fake_clock.settle()
            delivery = await notifier.get(delivery.id)
            assert delivery.attempts[0].status is AttemptStatus.ACCEPTED
            yield Stack(notifier, fake_clock, url, http, delivery)


async def test_valid_receipt_is_recorded_and_answered_200(stack: Stack) -> None:
    """A correctly signed `read` receipt is answered 200 and ends the cascade on `app`."""
    body = receipt(stack.message_id, "read")
    answer = await stack.post(body, stack.signed(body))
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "received": 1, "duplicates": 0, "unknown": 0}
    await stack.clock.settle()
    delivery = await stack.notifier.get(stack.delivery.id)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.channel == "app"
    assert [r.receipt_id for r in delivery.attempts[0].receipts] == ["msg_1"]


@pytest.mark.parametrize("valid_first", [True, False])
async def test_two_signature_headers_verify_whichever_holds_the_valid_one(
    stack: Stack, valid_first: bool
) -> None:
    """Two `webhook-signature` headers (a proxy or a rotating sender adds one) arrive
    joined with ", "; the valid one verifies in either place."""
    body = receipt(stack.message_id, "read")
    headers = stack.signed(body)
    valid = headers.pop("webhook-signature")
    other = stack.signed(body, secret=OTHER_SECRET)["webhook-signature"]
    pairs = [
        *headers.items(),
        *(
            ("webhook-signature", v)
            for v in sorted((valid, other), key=lambda v: v != valid if valid_first else v == valid)
        ),
    ]
    answer = await stack.http.post(f"{stack.url}/receipts/app", content=body, headers=pairs)
    assert answer.status_code == 200, answer.text


async def test_receipt_for_unknown_message_is_acknowledged(stack: Stack) -> None:
    """A signed receipt about a message we never sent gets 200, so the sender stops."""
    body = receipt("not-ours", "delivered")
    answer = await stack.post(body, stack.signed(body))
    assert answer.status_code == 200
    assert answer.json()["unknown"] == 1


async def test_receipt_for_finished_delivery_is_acknowledged(stack: Stack) -> None:
    """Receipts after the cascade ended are 200 too; a late `delivered` after `read` is kept."""
    read = receipt(stack.message_id, "read")
    assert (await stack.post(read, stack.signed(read, "w1"))).status_code == 200
    await stack.clock.settle()
    late = receipt(stack.message_id, "delivered")
    answer = await stack.post(late, stack.signed(late, "w2"))
    assert answer.status_code == 200
    delivery = await stack.notifier.get(stack.delivery.id)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.attempts[0].status is AttemptStatus.READ


@pytest.mark.parametrize("case", ["missing", "bad", "other_secret", "old", "future"])
async def test_bad_or_missing_signature_is_401_and_changes_nothing(stack: Stack, case: str) -> None:
    """No, a wrong, a foreign-key or an out-of-tolerance signature: 401, state untouched."""
    before = await stack.state()
    body = receipt(stack.message_id, "read")
    headers = {
        "missing": {},
        "bad": {**stack.signed(body), "webhook-signature": "v1,AAAA"},
        "other_secret": stack.signed(body, secret=OTHER_SECRET),
        "old": stack.signed(body, ts=time.time() - 310),
        "future": stack.signed(body, ts=time.time() + 310),
    }[case]
    answer = await stack.post(body, headers)
    assert answer.status_code == 401
    assert await stack.state() == before


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'{"message_id": "x"}',
        b'{"message_id": "x", "status": "seen"}',
        b'"read"',
        b'{"message_id": 1, "status": "read"}',
        b"\xff\xfe",
        b'{"message_id": "x", "status": "read", "timestamp": "yesterday"}',
    ],
)
async def test_malformed_signed_body_is_400_and_changes_nothing(stack: Stack, body: bytes) -> None:
    """A correctly signed body that is not a receipt: 400, nothing recorded."""
    before = await stack.state()
    stamp = int(time.time())
    headers = {"webhook-id": "m", "webhook-timestamp": str(stamp)}
    provider = stack.notifier.providers["app"]
    assert isinstance(provider, WebhookProvider)
    headers["webhook-signature"] = provider.signature("m", stamp, body)
    answer = await stack.post(body, headers)
    assert answer.status_code == 400
    assert "malformed" in answer.json()["error"]
    assert await stack.state() == before


@pytest.mark.parametrize(
    "path",
    [
        "/receipts/nope",
        "/receipts/sms",
        "/receipts/app/x",
        "/receipts/",
        "/receipts",
        "/elsewhere/app",
    ],
)
async def test_unknown_provider_or_path_is_404(stack: Stack, path: str) -> None:
    """Unknown providers, providers that take no webhooks and other paths: 404."""
    answer = await stack.http.post(stack.url + path, content=b"{}")
    assert answer.status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_wrong_method_is_405(stack: Stack, method: str) -> None:
    """Only POST reaches a provider without a handshake; the answer says so."""
    answer = await stack.http.request(method, f"{stack.url}/receipts/app")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"


async def raw_exchange(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Write `head` and `body` on a raw socket, read until the server closes; return
    everything it said."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=5.0)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_declared_oversize_is_413_before_reading_the_body(stack: Stack) -> None:
    """A Content-Length over the cap is refused at once: the body is never sent, nor awaited."""
    head = (
        b"POST /receipts/app HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 10000000\r\n\r\n"
    )
    answer = await raw_exchange(stack.url, head, b"{")
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in answer.lower()


async def test_streamed_oversize_is_413(stack: Stack) -> None:
    """A chunked body growing past the cap is refused once it passes it."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * 64 * 1024

    answer = await stack.http.post(f"{stack.url}/receipts/app", content=chunks())
    assert answer.status_code == 413


@pytest.mark.parametrize("size", [320 * 1024, 1024 * 1024])
async def test_a_body_sent_past_the_cap_is_answered_413_not_reset(stack: Stack, size: int) -> None:
    """A sender that writes its whole oversized body before reading (most clients) gets the
    413: the rest is read and dropped (up to a bound), then the answer, then the close."""
    for streamed in (False, True):

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(size // (64 * 1024)):
                yield b" " * 64 * 1024

        body = chunks() if streamed else b" " * size
        answer = await stack.http.post(f"{stack.url}/receipts/app", content=body)
        assert answer.status_code == 413
        assert answer.headers["connection"] == "close"


async def test_at_the_cap_is_not_413(stack: Stack) -> None:
    """A body of exactly the cap is read (and refused only for its signature)."""
    answer = await stack.post(b" " * 256 * 1024, {})
    assert answer.status_code == 401


async def test_slow_sender_is_cut_off_with_408(stack: Stack) -> None:
    """A sender that stalls mid-body is answered 408 after `read_timeout` and disconnected."""
    head = b"POST /receipts/app HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n"
    answer = await raw_exchange(stack.url, head, b"{")
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_health(stack: Stack) -> None:
    """`GET {prefix}/-/health` is 200 while the notifier runs, 503 once it stopped."""
    answer = await stack.http.get(f"{stack.url}/receipts/-/health")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    await stack.notifier.stop()
    answer = await stack.http.get(f"{stack.url}/receipts/-/health")
    assert answer.status_code == 503


async def test_store_outage_is_503_so_the_sender_retries(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When receipts cannot be stored the answer is 503 with Retry-After, not a 4xx."""

    async def down(receipts: object) -> None:
        raise StoreError("database unavailable")

    monkeypatch.setattr(stack.notifier, "record_receipts", down)
    body = receipt(stack.message_id, "read")
    answer = await stack.post(body, stack.signed(body))
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"


class ChallengeProvider(Provider):
    """A provider with a GET handshake, like WhatsApp's hub.challenge; records URLs seen."""

    type_name = "challenge_test"
    default_channel = "app"
    webhook_methods = frozenset({"GET", "POST"})
    urls: ClassVar[list[str]] = []

    async def receive(self, request: WebhookRequest) -> Inbound:
        self.urls.append(request.url)
        if request.method != "GET" or request.query.get("hub.verify_token") != "tok":
            raise ValueError("not a subscription challenge")  # test provider, not a secret
        return Inbound(answer=WebhookResponse(200, request.query["hub.challenge"].encode()))


@pytest.fixture
async def challenge_url(fake_clock: FakeClock) -> AsyncIterator[str]:
    registry.register("challenge_test", ChallengeProvider)
    try:
        config = load_config(
            POLICY.replace("providers:\n", "providers:\n  hub: {type: challenge_test}\n")
        )
        notifier = Notifier(config, clock=fake_clock)
        app = asgi_app(notifier, public_url="https://hooks.example.com/")
        async with notifier, serve(app) as url:
            yield url
    finally:
        registry.unregister("challenge_test")
        ChallengeProvider.urls.clear()


async def test_get_runs_the_providers_handshake(challenge_url: str) -> None:
    """GET goes to the provider's handshake; a non-challenge GET is 400; the URL it sees is
    the public one."""
    async with httpx.AsyncClient() as http:
        ok = await http.get(
            f"{challenge_url}/receipts/hub",
            params={"hub.verify_token": "tok", "hub.challenge": "42"},
        )
        bad = await http.get(f"{challenge_url}/receipts/hub", params={"hub.challenge": "42"})
    assert (ok.status_code, ok.text) == (200, "42")
    assert bad.status_code == 400
    assert ChallengeProvider.urls[0] == (
        "https://hooks.example.com/receipts/hub?hub.verify_token=tok&hub.challenge=42"
    )


async def test_lifespan_starts_and_stops_a_notifier_it_runs_alone(fake_clock: FakeClock) -> None:
    """Served alone, the app starts the notifier at startup and stops it at shutdown."""
    notifier = await make_notifier(fake_clock)
    async with serve(asgi_app(notifier), lifespan="on") as url, httpx.AsyncClient() as http:
        assert notifier.running
        assert (await http.get(f"{url}/receipts/-/health")).status_code == 200
    assert not notifier.running


async def test_internal_failure_is_500_never_an_exception(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug behind a verified request is answered 500 (the sender retries), not raised."""
    provider = stack.notifier.providers["app"]

    def broken(request: WebhookRequest) -> list[Any]:
        raise TypeError("bug")

    monkeypatch.setattr(provider, "parse", broken)
    body = receipt(stack.message_id, "read")
    answer = await stack.post(body, stack.signed(body))
    assert answer.status_code == 500
    assert json.loads(answer.content) == {"error": "internal error"}
