"""What every emulator shares: the control surface over HTTP, scripts, serve, the fixture,
and the layer rule."""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import cascade_notify.testing.emulators as package
from cascade_notify.testing import FakeClock
from cascade_notify.testing.emulators import (
    EMULATORS,
    Emulator,
    Entry,
    TelegramEmulator,
    WhatsAppEmulator,
    emulator_class,
    running,
    serve,
)
from cascade_notify.testing.emulators._script import parse_script, receipt_plan
from cascade_notify.testing.emulators.fixtures import EmulatorFactory

from .conftest import Receiver

ADDRESS = {
    "whatsapp": "79161234567",
    "telegram": "123456789",
    "viber": "01234567890A=",
    "max": "123456789",
    "vk": "123456789",
    "twilio": "+79161234567",
    "call_centre": "+79161234567",
    "bitrix24": "+79161234567",
    "amocrm": "+79161234567",
    "smsru": "79161234567",
    "smsc": "79161234567",
}
EVENT = {
    "whatsapp": "message",
    "telegram": "start",
    "viber": "subscribed",
    "max": "bot_started",
    "vk": "message_allow",
    "twilio": "stop",
    "call_centre": "answered",
    "bitrix24": "complete",
    "amocrm": "complete",
}
#: What an event needs besides its address (the call centre: which task it is about).
EVENT_DATA: dict[str, dict[str, object]] = {
    "call_centre": {"task_id": "ct_control"},
    "bitrix24": {"create": True},
    "amocrm": {"create": True},
}


@pytest.fixture(params=list(EMULATORS))
async def emu(
    request: pytest.FixtureRequest, clock: FakeClock, receiver: Receiver
) -> AsyncIterator[Emulator]:
    name: str = request.param
    factory = EmulatorFactory(clock)
    yield await factory(name, webhook_url=f"{receiver.url}/{name}")
    await factory.close()


async def test_control_surface_over_http(
    emu: Emulator, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    """script, requests, webhooks, event, settings and reset all work over HTTP."""
    control = emu.control_url
    address = ADDRESS[emu.name]
    resp = await http.post(f"{control}/script", json={"address": address, "script": "no_receipt"})
    assert resp.json()["ok"] is True
    assert emu.requests == []  # control calls are not recorded
    if emu.events:  # the SMS gateways have no inbound events
        resp = await http.post(
            f"{control}/event",
            json={"event": EVENT[emu.name], "address": address, **EVENT_DATA.get(emu.name, {})},
        )
        [hook] = resp.json()["webhooks"]
        assert hook["delivered"] is True
        assert receiver.posts()[-1].path == f"/receipts/{emu.name}"
    await http.post(f"{emu.api_url}/nothing/here", content=b"x")
    requests = (await http.get(f"{control}/requests")).json()["requests"]
    assert [(r["method"], r["path"], r["body"]) for r in requests] == [
        ("POST", "/nothing/here", "x")
    ]
    webhooks = (await http.get(f"{control}/webhooks")).json()["webhooks"]
    assert len(webhooks) == (1 if emu.events else 0)
    settings = (await http.get(f"{control}/settings")).json()
    assert settings["name"] == emu.name
    assert settings["settings"]["type"] in {
        "whatsapp_cloud",
        "telegram_bot",
        "viber_bot",
        "max_bot",
        "vk_community",
        "twilio_sms",
        "call_webhook",
        "bitrix24_call_task",
        "amocrm_call_task",
        "smsru",
        "smsc",
    }
    assert (await http.post(f"{control}/reset")).json() == {"ok": True}
    assert emu.requests == []
    assert emu.webhooks == []


async def test_control_refuses_bad_input(emu: Emulator, http: httpx.AsyncClient) -> None:
    """An unknown script name or event is 400 with the known names."""
    control = emu.control_url
    resp = await http.post(f"{control}/script", json={"address": "a", "script": "explode"})
    assert resp.status_code == 400
    assert "known: deliver, read" in resp.json()["error"]
    resp = await http.post(f"{control}/event", json={"event": "explode", "address": "a"})
    assert resp.status_code == 400
    resp = await http.post(f"{control}/script", content=b"[")
    assert resp.status_code == 400


async def test_control_script_list_with_options(clock: FakeClock, http: httpx.AsyncClient) -> None:
    """A list script with option mappings goes over HTTP as JSON."""
    async with TelegramEmulator(clock=clock) as emu:
        script = [{"do": "rate_limited", "retry_after": 2}, "deliver"]
        resp = await http.post(
            f"{emu.control_url}/script", json={"address": "123", "script": script}
        )
        assert resp.json()["scripts"]["123"] == [
            {"do": "rate_limited", "retry_after": 2},
            {"do": "deliver"},
        ]


def test_script_parsing_refuses_mistakes() -> None:
    """Unknown names, unknown options, bad numbers and misplaced 'then' are refused."""
    for bad in (
        "explode",
        {"do": "slow", "seconds": -1},
        {"do": "read", "colour": 1},
        {"do": "deliver", "then": "read"},
        {"do": "slow", "then": "hang_up"},
        [],
        {"seconds": 1},
    ):
        with pytest.raises(ValueError):  # noqa: PT011  (the message differs per mistake)
            parse_script(bad, {"blocked"})  # type: ignore[arg-type]


def test_plans() -> None:
    """Receipt plans: defaults, overrides, duplicates and the reversed order."""
    every = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}
    assert receipt_plan(Entry("read"), every) == [(0.0, "sent"), (1.0, "delivered"), (2.0, "read")]
    assert receipt_plan(Entry("read", delays={"read": 30}), every)[-1] == (30, "read")
    assert receipt_plan(Entry("duplicate_receipts"), {"delivered": "delivered"}) == [
        (1.0, "delivered"),
        (1.5, "delivered"),
    ]
    assert receipt_plan(Entry("out_of_order"), {"delivered": "d", "read": "seen"}) == [
        (1.0, "seen"),
        (2.0, "d"),
    ]
    assert receipt_plan(Entry("read"), {}) == []


def test_emulator_class_by_name() -> None:
    """Names resolve lazily to the classes; an unknown one lists the known."""
    assert emulator_class("whatsapp") is WhatsAppEmulator
    known = (
        "known: whatsapp, telegram, viber, max, vk, twilio, call_centre, bitrix24, amocrm, "
        "smsru, smsc"
    )
    with pytest.raises(ValueError, match=known):
        emulator_class("pigeon")


async def test_running_posts_under_receipts_url(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    """running(): every emulator's webhooks go to {receipts_url}/{name}, on real time."""
    lines: list[str] = []
    async with running(receipts_url=receiver.url, log=lines.append) as emus:
        assert [e.name for e in emus] == list(EMULATORS)
        for emu in emus:
            assert emu.webhook_url == f"{receiver.url}/{emu.name}"
            if emu.events:
                await emu.event(EVENT[emu.name], ADDRESS[emu.name], **EVENT_DATA.get(emu.name, {}))
        wa = emus[0]
        wa.script("*", {"do": "deliver", "sent": 0, "delivered": 0.05})
        await http.post(
            f"{wa.api_url}/v23.0/106540352242922/messages",
            headers={"Authorization": "Bearer EAAemulator-access-token"},
            json={"messaging_product": "whatsapp", "to": "79161234567", "text": {"body": "x"}},
        )
        await wa.drain()
    paths = [h.path for h in receiver.posts()]
    with_events = [e.name for e in emus if e.events]
    count = len(with_events)
    assert paths[:count] == [f"/receipts/{name}" for name in with_events]
    assert paths[count:] == ["/receipts/whatsapp", "/receipts/whatsapp"]
    assert any("POST /v23.0/106540352242922/messages to 7916***4567 -> 200" in x for x in lines)
    assert sum("webhook" in line for line in lines) == count + 2


async def test_serve_prints_urls_and_settings_then_stops(receiver: Receiver) -> None:
    """serve() prints each api_url and a providers: block, and stops when cancelled."""
    lines: list[str] = []
    up = asyncio.Event()
    task = asyncio.ensure_future(
        serve(
            ["telegram", "viber"],
            receipts_url=receiver.url,
            base_port=0,
            log=lines.append,
            ready=lambda emus: up.set(),
        )
    )
    await asyncio.wait_for(up.wait(), 5)
    text = lines[0]
    assert 'providers:\n  telegram:\n    type: "telegram_bot"' in text
    assert "viber_bot" in text
    assert text.count("api_url http://127.0.0.1:") == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_fixture(emulators: EmulatorFactory, fake_clock: FakeClock) -> None:
    """The pytest fixture starts emulators on the test's fake clock, typed by class."""
    wa = await emulators(WhatsAppEmulator)
    tg = await emulators("telegram")
    assert wa.clock is fake_clock
    assert isinstance(tg, TelegramEmulator)
    assert wa.api_url != tg.api_url


def test_layer_rule() -> None:
    """Emulators import only the clock, the signing module, the test clock and the one
    address-masking function (their echo masks as the library's logs do) from
    cascade_notify."""
    allowed = {"cascade_notify.clock", "cascade_notify.providers._signing"}
    allowed.add("cascade_notify._logmask")
    allowed.add("cascade_notify.testing.clock")
    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                name = node.module
                if name.startswith("cascade_notify.") and not name.startswith(
                    "cascade_notify.testing.emulators"
                ):
                    assert name in allowed, f"{path.name} imports {name}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("cascade_notify"), path.name


def test_json_is_what_the_apis_write() -> None:
    """Bodies are compact UTF-8 JSON with big integers exact."""
    from cascade_notify.testing.emulators._base import compact

    assert (
        compact({"a": 2**63 - 1, "t": "Привет"})
        == json.dumps(
            {"a": 2**63 - 1, "t": "Привет"}, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )
