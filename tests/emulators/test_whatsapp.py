"""The WhatsApp Cloud API emulator, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cascade_notify.testing import FakeClock
from cascade_notify.testing.emulators import WhatsAppEmulator
from cascade_notify.testing.emulators.whatsapp import ERRORS

from .conftest import Hit, Receiver

TOKEN = "EAAemulator-access-token"
SECRET = "emulator-app-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def emu(clock: FakeClock, receiver: Receiver) -> AsyncIterator[WhatsAppEmulator]:
    async with WhatsAppEmulator(clock=clock, webhook_url=receiver.url + "/whatsapp") as e:
        yield e


def text(to: str = "+79161234567", body: str = "Your parcel has arrived.", **more: Any) -> Any:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"preview_url": False, "body": body},
        **more,
    }


async def send(
    http: httpx.AsyncClient, emu: WhatsAppEmulator, body: Any, headers: Any = None
) -> httpx.Response:
    url = f"{emu.api_url}/v23.0/{emu.phone_number_id}/messages"
    return await http.post(url, json=body, headers=AUTH if headers is None else headers)


def statuses(receiver: Receiver) -> list[str]:
    out = []
    for hit in receiver.posts():
        value = json.loads(hit.body)["entry"][0]["changes"][0]["value"]
        out += [s["status"] for s in value.get("statuses", [])]
    return out


def signed(hit: Hit) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, hit.headers["x-hub-signature-256"])


async def test_success_is_meta_shape_with_a_fresh_wamid(
    http: httpx.AsyncClient, emu: WhatsAppEmulator
) -> None:
    """A text send answers 200 with §1.4's shape, and every send gets a new wamid."""
    first = await send(http, emu, text())
    second = await send(http, emu, text())
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/json")
    data = first.json()
    assert list(data) == ["messaging_product", "contacts", "messages"]
    assert data["messaging_product"] == "whatsapp"
    assert data["contacts"] == [{"input": "+79161234567", "wa_id": "79161234567"}]
    assert [list(m) for m in data["messages"]] == [["id"]]
    assert data["messages"][0]["id"].startswith("wamid.")
    assert data["messages"][0]["id"] != second.json()["messages"][0]["id"]
    assert emu.sent_to("+79161234567")[0].text == "Your parcel has arrived."


@pytest.mark.parametrize(
    ("headers", "code", "status"),
    [
        ({}, 190, 401),
        ({"Authorization": "Basic abc"}, 190, 401),
        ({"Authorization": "Bearer wrong"}, 190, 401),
    ],
)
async def test_bad_auth_is_190(
    http: httpx.AsyncClient, emu: WhatsAppEmulator, headers: Any, code: int, status: int
) -> None:
    """A missing, malformed or wrong bearer token is Graph error 190 with 401."""
    resp = await send(http, emu, text(), headers=headers)
    assert resp.status_code == status
    assert resp.json()["error"]["code"] == code
    assert emu.outbox == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({**text(), "messaging_product": "sms"}, 100),
        (text(body="x" * 4097), 100),
        ({k: v for k, v in text().items() if k != "to"}, 131008),
        ({**text(), "text": {}}, 131008),
        ({**text(), "type": "image"}, 131051),
        (text(biz_opaque_callback_data="x" * 513), 100),
        ([1, 2], 100),
    ],
)
async def test_checks_refuse_what_meta_refuses(
    http: httpx.AsyncClient, emu: WhatsAppEmulator, body: Any, code: int
) -> None:
    """Wrong product, text over 4096, missing fields, unsupported type: 400 and the code."""
    resp = await send(http, emu, body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == code
    assert emu.outbox == []


async def test_text_of_4096_characters_passes(
    http: httpx.AsyncClient, emu: WhatsAppEmulator
) -> None:
    """The limit is inclusive."""
    assert (await send(http, emu, text(body="x" * 4096))).status_code == 200


async def test_unknown_phone_number_id_and_path(
    http: httpx.AsyncClient, emu: WhatsAppEmulator
) -> None:
    """Another phone number id is 400 code 100; an unknown path is 404 in the envelope."""
    other = await http.post(f"{emu.api_url}/v23.0/999/messages", json=text(), headers=AUTH)
    assert (other.status_code, other.json()["error"]["code"]) == (400, 100)
    lost = await http.post(f"{emu.api_url}/v23.0/nothing", json=text(), headers=AUTH)
    assert lost.status_code == 404
    assert lost.json()["error"]["code"] == 100


async def test_templates_are_checked_when_listed(clock: FakeClock, http: httpx.AsyncClient) -> None:
    """With approved templates listed, another name or language is 132001."""
    async with WhatsAppEmulator(clock=clock, templates={"parcel_arrived": ["ru"]}) as emu:
        good = {
            "messaging_product": "whatsapp",
            "to": "79161234567",
            "type": "template",
            "template": {"name": "parcel_arrived", "language": {"code": "ru"}},
        }
        assert (await send(http, emu, good)).status_code == 200
        bad = {**good, "template": {"name": "parcel_arrived", "language": {"code": "en"}}}
        assert (await send(http, emu, bad)).json()["error"]["code"] == 132001


@pytest.mark.parametrize("name", sorted(ERRORS))
async def test_each_named_error(http: httpx.AsyncClient, emu: WhatsAppEmulator, name: str) -> None:
    """Each named error answers its Graph envelope with its HTTP status."""
    emu.script("79161234567", name)
    resp = await send(http, emu, text())
    error = ERRORS[name]
    assert resp.status_code == error.http
    body = resp.json()["error"]
    assert list(body) == ["message", "type", "code", "error_data", "fbtrace_id"]
    assert body["code"] == error.code
    assert body["message"] == f"(#{error.code}) {error.title}"
    assert body["type"] == "OAuthException"
    assert body["error_data"]["messaging_product"] == "whatsapp"
    assert emu.requests[-1].entry == name


async def test_a_list_script_fails_once_then_works(
    http: httpx.AsyncClient, emu: WhatsAppEmulator
) -> None:
    """[server_error, deliver]: 500 once, then 200, and the last entry repeats."""
    emu.script("+79161234567", ["server_error", "deliver"])
    codes = [(await send(http, emu, text())).status_code for _ in range(3)]
    assert codes == [500, 200, 200]


async def test_a_default_list_is_walked_per_address(
    http: httpx.AsyncClient, emu: WhatsAppEmulator
) -> None:
    """'*' = [server_error, deliver]: each address fails once, on its own."""
    emu.script("*", ["server_error", "deliver"])
    codes = [
        (await send(http, emu, text(to=to))).status_code
        for to in ("79160000001", "79160000002", "79160000001")
    ]
    assert codes == [500, 500, 200]


async def test_scripts_are_per_address_with_a_default(
    http: httpx.AsyncClient, emu: WhatsAppEmulator
) -> None:
    """'*' answers every unscripted address; a scripted one keeps its own."""
    emu.script("*", "undeliverable")
    emu.script("79160000000", "deliver")
    assert (await send(http, emu, text())).status_code == 400
    assert (await send(http, emu, text(to="79160000000"))).status_code == 200


async def test_status_webhooks_signed_after_the_clock(
    http: httpx.AsyncClient, emu: WhatsAppEmulator, clock: FakeClock, receiver: Receiver
) -> None:
    """'read': sent at once, delivered after 1 s, read after 2 s, each signed over its raw
    body with the app secret and echoing biz_opaque_callback_data."""
    emu.script("79161234567", "read")
    resp = await send(http, emu, text(biz_opaque_callback_data="attempt:42"))
    wamid = resp.json()["messages"][0]["id"]
    await clock.advance(0)
    assert statuses(receiver) == ["sent"]
    await clock.advance(0.9)
    assert statuses(receiver) == ["sent"]
    await clock.advance(0.1)
    assert statuses(receiver) == ["sent", "delivered"]
    await clock.advance(1)
    assert statuses(receiver) == ["sent", "delivered", "read"]
    for hit in receiver.posts():
        assert hit.path == "/receipts/whatsapp"
        assert hit.headers["content-type"] == "application/json"
        assert signed(hit)
        body = json.loads(hit.body)
        assert body["object"] == "whatsapp_business_account"
        value = body["entry"][0]["changes"][0]["value"]
        assert value["metadata"]["phone_number_id"] == emu.phone_number_id
        status = value["statuses"][0]
        assert status["id"] == wamid
        assert status["recipient_id"] == "79161234567"
        assert status["biz_opaque_callback_data"] == "attempt:42"
        assert isinstance(status["timestamp"], str)


async def test_advance_waits_for_posts_in_flight(
    http: httpx.AsyncClient, emu: WhatsAppEmulator, clock: FakeClock, receiver: Receiver
) -> None:
    """FakeClock.advance returns only once the webhooks it made due were answered, even by
    a receiver that takes real time (the emulator's idle check)."""
    receiver.delay = 0.05
    await send(http, emu, text())
    await clock.advance(1)
    assert statuses(receiver) == ["sent", "delivered"]
    assert all(hook.delivered for hook in emu.webhooks)


async def test_delays_come_from_the_script(
    http: httpx.AsyncClient, emu: WhatsAppEmulator, clock: FakeClock, receiver: Receiver
) -> None:
    """A receipt 'after 30 s' arrives when the fake clock passes 30 s, not before."""
    emu.script("79161234567", {"do": "deliver", "delivered": 30})
    await send(http, emu, text())
    await clock.advance(29.9)
    assert statuses(receiver) == ["sent"]
    await clock.advance(0.1)
    assert statuses(receiver) == ["sent", "delivered"]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("deliver", ["sent", "delivered"]),
        ("read_only", ["sent", "read"]),
        ("no_receipt", []),
        ("duplicate_receipts", ["sent", "delivered", "delivered"]),
        ("out_of_order", ["read", "delivered", "sent"]),
        ("fail_receipt", ["sent", "failed"]),
    ],
)
async def test_receipt_scenarios(
    http: httpx.AsyncClient,
    emu: WhatsAppEmulator,
    clock: FakeClock,
    receiver: Receiver,
    script: str,
    expected: list[str],
) -> None:
    """Each scenario posts its receipts in its order."""
    emu.script("79161234567", script)
    await send(http, emu, text())
    await clock.advance(10)
    assert statuses(receiver) == expected
    assert all(signed(h) for h in receiver.posts())


async def test_duplicates_are_the_same_receipt_twice(
    http: httpx.AsyncClient, emu: WhatsAppEmulator, clock: FakeClock, receiver: Receiver
) -> None:
    """The duplicated delivered webhook carries the same message id and status."""
    emu.script("79161234567", "duplicate_receipts")
    await send(http, emu, text())
    await clock.advance(10)
    delivered = [h.body for h in receiver.posts() if b'"delivered"' in h.body]
    assert len(delivered) == 2
    ids = {json.loads(b)["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] for b in delivered}
    assert len(ids) == 1


async def test_failed_receipt_carries_the_code(
    http: httpx.AsyncClient, emu: WhatsAppEmulator, clock: FakeClock, receiver: Receiver
) -> None:
    """fail_receipt with code 131049: 200 at send, then a failed status with errors[]."""
    emu.script("79161234567", "fail_receipt", code=131049)
    assert (await send(http, emu, text())).status_code == 200
    await clock.advance(5)
    last = json.loads(receiver.posts()[-1].body)["entry"][0]["changes"][0]["value"]
    assert last["statuses"][0]["status"] == "failed"
    assert last["statuses"][0]["errors"][0]["code"] == 131049


async def test_slow_answers_when_the_clock_passes(
    http: httpx.AsyncClient, emu: WhatsAppEmulator, clock: FakeClock
) -> None:
    """slow 3 s: no answer before the fake clock passes 3 s, then a success."""
    emu.script("79161234567", "slow", seconds=3)
    pending = asyncio.ensure_future(send(http, emu, text()))
    await clock.advance(2.5)
    assert not pending.done()
    await clock.advance(0.5)
    resp = await asyncio.wait_for(pending, 5)
    assert resp.status_code == 200


async def test_hang_up_reads_then_closes(
    http: httpx.AsyncClient, emu: WhatsAppEmulator, clock: FakeClock, receiver: Receiver
) -> None:
    """hang_up: the request is recorded, the connection closes with no answer; with
    then=deliver the message still went out and its receipts follow."""
    emu.script("79161234567", ["hang_up", {"do": "hang_up", "then": "deliver"}])
    with pytest.raises(httpx.RemoteProtocolError):
        await send(http, emu, text(biz_opaque_callback_data="a1"))
    assert emu.requests[-1].status is None
    assert emu.outbox == []
    with pytest.raises(httpx.RemoteProtocolError):
        await send(http, emu, text(biz_opaque_callback_data="a2"))
    assert len(emu.outbox) == 1
    await clock.advance(2)
    assert statuses(receiver) == ["sent", "delivered"]
    assert b'"a2"' in receiver.posts()[-1].body


async def test_webhooks_are_retried_until_2xx(
    http: httpx.AsyncClient, emu: WhatsAppEmulator, clock: FakeClock, receiver: Receiver
) -> None:
    """A receiver answering 500 gets the same webhook again after 1 s, then 5 s more."""
    receiver.answers = [500, 503]
    emu.script("*", {"do": "deliver", "delivered": 100})
    await send(http, emu, text())
    await clock.advance(0)
    [hook] = emu.webhooks
    assert [a.status for a in hook.attempts] == [500]
    await clock.advance(1)
    assert [a.status for a in hook.attempts] == [500, 503]
    await clock.advance(4.9)
    assert len(hook.attempts) == 2
    await clock.advance(0.1)
    assert [a.status for a in hook.attempts] == [500, 503, 200]
    sent = [h.body for h in receiver.posts() if b'"sent"' in h.body]
    assert len(sent) == 3
    assert len(set(sent)) == 1


async def test_retries_are_bounded(clock: FakeClock, http: httpx.AsyncClient) -> None:
    """Past the last retry delay the webhook is given up."""
    async with WhatsAppEmulator(
        clock=clock, webhook_url="http://127.0.0.1:9/nowhere", retry_delays=[1, 2]
    ) as emu:
        emu.script("*", "no_receipt")
        await send(http, emu, text())
        hooks = await emu.event("message", "79161234567")
        await clock.advance(100)
        assert [a.status for a in hooks[0].attempts] == [None, None, None]
        assert not hooks[0].delivered


async def test_verify_handshake(emu: WhatsAppEmulator, receiver: Receiver) -> None:
    """The GET handshake carries hub.mode, hub.verify_token, hub.challenge."""
    assert await emu.verify_webhook(challenge="1158201444")
    hit = receiver.hits[-1]
    assert hit.method == "GET"
    assert hit.query == {
        "hub.mode": "subscribe",
        "hub.verify_token": "emulator-verify-token",
        "hub.challenge": "1158201444",
    }
    assert not await emu.verify_webhook(verify_token="wrong")


async def test_events(
    http: httpx.AsyncClient, emu: WhatsAppEmulator, clock: FakeClock, receiver: Receiver
) -> None:
    """A customer writing posts a signed inbound message; reading posts `read` for the
    last message; blocking makes later sends 131026."""
    [hook] = await emu.event("message", "+79161234567", text="Hi")
    assert hook.delivered
    value = json.loads(receiver.posts()[-1].body)["entry"][0]["changes"][0]["value"]
    assert value["messages"][0]["text"] == {"body": "Hi"}
    assert signed(receiver.posts()[-1])
    emu.script("*", "no_receipt")
    wamid = (await send(http, emu, text())).json()["messages"][0]["id"]
    await emu.event("read", "79161234567")
    assert statuses(receiver) == ["read"]
    assert wamid.encode() in receiver.posts()[-1].body
    await emu.event("block", "79161234567")
    assert (await send(http, emu, text())).json()["error"]["code"] == 131026
    await emu.event("unblock", "79161234567")
    assert (await send(http, emu, text())).status_code == 200


async def test_service_window(clock: FakeClock, http: httpx.AsyncClient) -> None:
    """service_window=True: free-form text is 131047 until the customer writes, and
    again 24 h after."""
    async with WhatsAppEmulator(clock=clock, service_window=True) as emu:
        assert (await send(http, emu, text())).json()["error"]["code"] == 131047
        await emu.event("message", "79161234567")
        assert (await send(http, emu, text())).status_code == 200
        await clock.advance(24 * 3600 + 1)
        assert (await send(http, emu, text())).json()["error"]["code"] == 131047
