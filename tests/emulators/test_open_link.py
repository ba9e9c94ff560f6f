"""`open_link`: each bot emulator opens a deep link as the customer would, and posts the
update its API sends for it; a link to another bot, or of another form, is refused."""

from __future__ import annotations

import json

import httpx
import pytest

from cascade_notify.testing import FakeClock
from cascade_notify.testing.emulators import (
    MaxEmulator,
    TelegramEmulator,
    ViberEmulator,
    VkEmulator,
)

from .conftest import Receiver

PAYLOAD = "EGsbVIgKlBa3F2FubmHcXyOgFFa-VVUDhuE"


async def test_telegram_posts_start_with_the_payload_over_http(
    clock: FakeClock, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    """Over the control API: `/start <payload>` as a bot_command, with the secret header."""
    async with TelegramEmulator(
        clock=clock, webhook_url=f"{receiver.url}/tg", secret_token="s3cret"
    ) as emu:
        link = f"https://t.me/acme_notify_bot?start={PAYLOAD}"
        answer = await http.post(
            f"{emu.control_url}/event",
            json={"event": "open_link", "address": "123456789", "link": link},
        )
        assert answer.json()["ok"] is True
        [hit] = receiver.posts()
        message = json.loads(hit.body)["message"]
        assert message["text"] == f"/start {PAYLOAD}" and message["chat"]["id"] == 123456789
        assert message["entities"][0]["type"] == "bot_command"
        assert hit.headers["x-telegram-bot-api-secret-token"] == "s3cret"
        # a payload Telegram would not pass on: the chat opens with a bare /start
        [bare] = await emu.event(
            "open_link", "1", link="https://t.me/acme_notify_bot?start=" + "a" * 65
        )
        assert json.loads(bare.body)["message"]["text"] == "/start"


async def test_max_posts_bot_started_and_drops_a_payload_over_128(clock: FakeClock) -> None:
    """`bot_started` with the payload; past 128 characters MAX drops it."""
    async with MaxEmulator(clock=clock) as emu:
        [hook] = await emu.event(
            "open_link", "42", link=f"https://max.ru/acme_notify_bot?start={PAYLOAD}"
        )
        [long] = await emu.event(
            "open_link", "42", link="https://max.ru/acme_notify_bot?start=" + "a" * 129
        )
    update = json.loads(hook.body)
    assert (update["update_type"], update["payload"], update["user"]["user_id"]) == (
        "bot_started",
        PAYLOAD,
        42,
    )
    assert "payload" not in json.loads(long.body)


async def test_viber_posts_conversation_started_with_the_context(clock: FakeClock) -> None:
    """`conversation_started` with the link's `context`, signed like every callback."""
    async with ViberEmulator(clock=clock) as emu:
        link = f"viber://pa?chatURI={emu.uri}&context={PAYLOAD}"
        [hook] = await emu.event("open_link", "01234567890A=", link=link)
    event = json.loads(hook.body)
    assert (event["event"], event["context"], event["user"]["id"]) == (
        "conversation_started",
        PAYLOAD,
        "01234567890A=",
    )
    assert "X-Viber-Content-Signature" in hook.headers


async def test_vk_posts_message_new_with_the_ref(clock: FakeClock) -> None:
    """The person's first message after a vk.me link: `message_new` with `ref`; the
    community answers to `club<id>` and to its screen name."""
    async with VkEmulator(clock=clock, screen_name="acme") as emu:
        hooks = [
            await emu.event("open_link", "7", link=f"https://vk.me/{name}?ref={PAYLOAD}")
            for name in (f"club{emu.group_id}", "acme")
        ]
    for [hook] in hooks:
        event = json.loads(hook.body)
        assert event["type"] == "message_new"
        assert (event["object"]["message"]["ref"], event["object"]["message"]["from_id"]) == (
            PAYLOAD,
            7,
        )


@pytest.mark.parametrize(
    ("emulator", "link"),
    [
        (TelegramEmulator, f"https://t.me/another_bot?start={PAYLOAD}"),
        (TelegramEmulator, f"https://max.ru/acme_notify_bot?start={PAYLOAD}"),
        (MaxEmulator, f"https://max.ru/another_bot?start={PAYLOAD}"),
        (ViberEmulator, f"viber://pa?chatURI=another&context={PAYLOAD}"),
        (VkEmulator, f"https://vk.me/club1?ref={PAYLOAD}"),
    ],
)
async def test_a_link_to_another_bot_is_refused(
    clock: FakeClock, http: httpx.AsyncClient, emulator: type, link: str
) -> None:
    """Another bot's link, or another messenger's: 400 over HTTP, nothing posted."""
    async with emulator(clock=clock) as emu:
        address = "01234567890A=" if emulator is ViberEmulator else "123"
        answer = await http.post(
            f"{emu.control_url}/event",
            json={"event": "open_link", "address": address, "link": link},
        )
        assert answer.status_code == 400 and "link" in answer.json()["error"]
        assert emu.webhooks == []
