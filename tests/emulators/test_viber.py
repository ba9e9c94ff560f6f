"""The Viber REST Bot API emulator, over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cascade_notify.testing import FakeClock
from cascade_notify.testing.emulators import ViberEmulator
from cascade_notify.testing.emulators.viber import ERRORS

from .conftest import Hit, Receiver

TOKEN = "4453b6ac1b2c3d4e-e02c5f1217480500-emulatortoken0001"
USER = "01234567890A="


@pytest.fixture
async def emu(clock: FakeClock, receiver: Receiver) -> AsyncIterator[ViberEmulator]:
    async with ViberEmulator(clock=clock, webhook_url=receiver.url + "/viber") as e:
        yield e


def message(**more: Any) -> dict[str, Any]:
    return {
        "receiver": USER,
        "type": "text",
        "text": "Your parcel A-1234 has arrived.",
        "sender": {"name": "Acme Delivery"},
        "tracking_data": "attempt:7",
        **more,
    }


async def call(
    http: httpx.AsyncClient, emu: ViberEmulator, method: str, body: Any, token: str | None = TOKEN
) -> httpx.Response:
    headers = {} if token is None else {"X-Viber-Auth-Token": token}
    return await http.post(f"{emu.api_url}/pa/{method}", json=body, headers=headers)


def signed(hit: Hit) -> bool:
    expected = hmac.new(TOKEN.encode(), hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, hit.headers["x-viber-content-signature"])


def events(receiver: Receiver) -> list[str]:
    return [json.loads(h.body)["event"] for h in receiver.posts()]


async def test_success_shape_and_a_big_exact_token(
    http: httpx.AsyncClient, emu: ViberEmulator
) -> None:
    """status 0 ok with a 64-bit message_token no float holds exactly."""
    resp = await call(http, emu, "send_message", message())
    assert resp.status_code == 200
    body = resp.json()
    assert list(body) == ["status", "status_message", "message_token", "chat_hostname"]
    assert (body["status"], body["status_message"]) == (0, "ok")
    token = body["message_token"]
    assert isinstance(token, int)
    assert 2**53 < token < 2**63
    assert int(float(token)) != token
    assert str(token).encode() in resp.content
    assert emu.outbox[0].id == str(token)


async def test_token_in_the_body_as_the_sdk_sends_it(
    http: httpx.AsyncClient, emu: ViberEmulator
) -> None:
    """auth_token in the JSON body works like the header."""
    resp = await call(http, emu, "send_message", message(auth_token=TOKEN), token=None)
    assert resp.json()["status"] == 0


@pytest.mark.parametrize(
    ("token", "status", "status_message"),
    [(None, 2, "missing_auth_token"), ("wrong", 2, "invalidAuthToken")],
)
async def test_bad_auth_is_still_http_200(
    http: httpx.AsyncClient, emu: ViberEmulator, token: str | None, status: int, status_message: str
) -> None:
    """A missing or wrong token is a status, with HTTP 200."""
    resp = await call(http, emu, "send_message", message(), token=token)
    assert resp.status_code == 200
    assert resp.json() == {"status": status, "status_message": status_message}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({k: v for k, v in message().items() if k != "receiver"}, 4),
        ({k: v for k, v in message().items() if k != "sender"}, 4),
        (message(text=""), 4),
        (message(text="x" * 7001), 3),
        (message(sender={"name": "x" * 29}), 3),
        (message(tracking_data="x" * 4001), 3),
        ([1], 3),
    ],
)
async def test_checks(http: httpx.AsyncClient, emu: ViberEmulator, body: Any, status: int) -> None:
    """Missing fields are 4 missingData, over-long ones 3 badData."""
    resp = await call(http, emu, "send_message", body)
    assert (resp.status_code, resp.json()["status"]) == (200, status)
    assert emu.outbox == []


@pytest.mark.parametrize("name", sorted(set(ERRORS) - {"server_error"}))
async def test_each_named_status(http: httpx.AsyncClient, emu: ViberEmulator, name: str) -> None:
    """Each named error is its status and status_message, with HTTP 200."""
    emu.script(USER, name)
    resp = await call(http, emu, "send_message", message())
    assert resp.status_code == 200
    body = resp.json()
    assert (body["status"], body["status_message"]) == ERRORS[name]
    assert isinstance(body["message_token"], int)


async def test_server_error_is_http_500(http: httpx.AsyncClient, emu: ViberEmulator) -> None:
    """server_error is the HTTP 5xx row: no JSON at all."""
    emu.script(USER, ["server_error", "deliver"])
    assert (await call(http, emu, "send_message", message())).status_code == 500
    assert (await call(http, emu, "send_message", message())).json()["status"] == 0


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("deliver", ["delivered"]),
        ("read", ["delivered", "seen"]),
        ("read_only", ["seen"]),
        ("no_receipt", []),
        ("fail_receipt", ["failed"]),
        ("duplicate_receipts", ["delivered", "delivered"]),
        ("out_of_order", ["seen", "delivered"]),
    ],
)
async def test_callbacks(
    http: httpx.AsyncClient,
    emu: ViberEmulator,
    clock: FakeClock,
    receiver: Receiver,
    script: str,
    expected: list[str],
) -> None:
    """Each scenario's callbacks, signed with the auth token, naming the exact token."""
    emu.script(USER, script)
    token = (await call(http, emu, "send_message", message())).json()["message_token"]
    await clock.advance(10)
    assert events(receiver) == expected
    for hit in receiver.posts():
        assert signed(hit)
        body = json.loads(hit.body)
        assert body["message_token"] == token
        assert body["user_id"] == USER
        assert body["chat_hostname"] == "SN-CHAT-05_"
        assert isinstance(body["timestamp"], int)


async def test_delivered_after_a_second_on_the_clock(
    http: httpx.AsyncClient, emu: ViberEmulator, clock: FakeClock, receiver: Receiver
) -> None:
    """The default delivered callback comes 1 s after the answer, in milliseconds."""
    await call(http, emu, "send_message", message())
    await clock.advance(0.5)
    assert events(receiver) == []
    await clock.advance(0.5)
    assert events(receiver) == ["delivered"]
    assert json.loads(receiver.posts()[0].body)["timestamp"] == int(clock.now() * 1000)


async def test_failed_has_desc(
    http: httpx.AsyncClient, emu: ViberEmulator, clock: FakeClock, receiver: Receiver
) -> None:
    """A failed callback carries desc."""
    emu.script(USER, "fail_receipt", detail="device offline")
    await call(http, emu, "send_message", message())
    await clock.advance(5)
    assert json.loads(receiver.posts()[0].body)["desc"] == "device offline"


async def test_set_webhook_handshake(
    http: httpx.AsyncClient, emu: ViberEmulator, receiver: Receiver
) -> None:
    """set_webhook posts a signed `webhook` event first; 200 there sets it, else status 1."""
    types = ["delivered", "seen", "failed"]
    body = {"url": receiver.url + "/viber2", "event_types": types}
    resp = await call(http, emu, "set_webhook", body)
    assert resp.json() == {"status": 0, "status_message": "ok", "event_types": types}
    hit = receiver.posts()[-1]
    assert json.loads(hit.body)["event"] == "webhook"
    assert signed(hit)
    assert emu.webhook_url == receiver.url + "/viber2"
    receiver.answers = [404]
    bad = await call(http, emu, "set_webhook", {"url": receiver.url + "/bad"})
    assert bad.json() == {"status": 1, "status_message": "invalidUrl"}
    assert emu.webhook_url == receiver.url + "/viber2"


async def test_event_types_filter_receipts(
    http: httpx.AsyncClient, emu: ViberEmulator, clock: FakeClock, receiver: Receiver
) -> None:
    """Receipts not in set_webhook's event_types are not posted; `subscribed` always is."""
    await call(http, emu, "set_webhook", {"url": receiver.url + "/viber", "event_types": ["seen"]})
    emu.script(USER, "read")
    await call(http, emu, "send_message", message())
    await emu.event("subscribed", USER)
    await clock.advance(10)
    assert events(receiver) == ["webhook", "subscribed", "seen"]


async def test_require_webhook(clock: FakeClock, http: httpx.AsyncClient) -> None:
    """require_webhook: sends are status 10 webhookNotSet until one is set."""
    async with ViberEmulator(clock=clock, require_webhook=True) as emu:
        assert (await call(http, emu, "send_message", message())).json()["status"] == 10


async def test_unsubscribe_then_sends_are_status_6(
    http: httpx.AsyncClient, emu: ViberEmulator, receiver: Receiver
) -> None:
    """An unsubscribed callback is posted; later sends are receiverNotSubscribed."""
    await emu.event("unsubscribed", USER)
    assert json.loads(receiver.posts()[-1].body) | {"timestamp": 0, "message_token": 0} == {
        "event": "unsubscribed",
        "timestamp": 0,
        "chat_hostname": "SN-CHAT-05_",
        "message_token": 0,
        "user_id": USER,
    }
    assert (await call(http, emu, "send_message", message())).json()["status"] == 6
    await emu.event("subscribed", USER)
    assert (await call(http, emu, "send_message", message())).json()["status"] == 0


async def test_inbound_events(
    http: httpx.AsyncClient, emu: ViberEmulator, receiver: Receiver
) -> None:
    """conversation_started, message and seen post their bodies, signed."""
    await emu.event("conversation_started", USER, context="parcel-A-1234")
    started = json.loads(receiver.posts()[-1].body)
    assert (started["type"], started["context"], started["subscribed"]) == (
        "open",
        "parcel-A-1234",
        False,
    )
    assert started["user"]["id"] == USER
    await emu.event("message", USER, text="Thanks!")
    assert json.loads(receiver.posts()[-1].body)["message"]["text"] == "Thanks!"
    emu.script(USER, "no_receipt")
    token = (await call(http, emu, "send_message", message())).json()["message_token"]
    await emu.event("seen", USER)
    seen = json.loads(receiver.posts()[-1].body)
    assert (seen["event"], seen["message_token"]) == ("seen", token)
    assert all(signed(h) for h in receiver.posts())


async def test_account_info(http: httpx.AsyncClient, emu: ViberEmulator) -> None:
    """get_account_info answers status 0 with the bot's name and webhook."""
    body = (await call(http, emu, "get_account_info", {})).json()
    assert (body["status"], body["name"], body["webhook"]) == (0, "Acme Delivery", emu.webhook_url)
