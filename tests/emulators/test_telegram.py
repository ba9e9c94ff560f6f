"""The Telegram Bot API emulator, over real HTTP and through python-telegram-bot."""

from __future__ import annotations

import datetime as dt
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import telegram
import telegram.error

from cascade_notify.testing import FakeClock
from cascade_notify.testing.emulators import TelegramEmulator
from cascade_notify.testing.emulators.telegram import ERRORS

from .conftest import Receiver

TOKEN = "7000000001:AAemulator-test-token_0000000000000"
CHAT = "123456789"


@pytest.fixture
async def emu(clock: FakeClock, receiver: Receiver) -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(
        clock=clock, webhook_url=receiver.url + "/telegram", secret_token="s3cret-Token_1"
    ) as e:
        yield e


def url(emu: TelegramEmulator, method: str, token: str = TOKEN) -> str:
    return f"{emu.api_url}/bot{token}/{method}"


async def test_get_me_is_the_documented_body(
    http: httpx.AsyncClient, emu: TelegramEmulator
) -> None:
    """getMe answers exactly §2.7's body, by GET and by POST, in any case."""
    expected = (
        b'{"ok":true,"result":{"id":7000000001,"is_bot":true,'
        b'"first_name":"Acme Notify","username":"acme_notify_bot"}}'
    )
    for resp in (await http.get(url(emu, "getMe")), await http.post(url(emu, "GETME"))):
        assert resp.status_code == 200
        assert resp.content == expected


@pytest.mark.parametrize("how", ["form", "json", "query"])
async def test_send_message_every_way(
    http: httpx.AsyncClient, emu: TelegramEmulator, how: str
) -> None:
    """Form, JSON and query parameters all send; the answer is §2.3's shape."""
    params = {"chat_id": CHAT, "text": "Your parcel has arrived."}
    if how == "form":
        resp = await http.post(url(emu, "sendMessage"), data=params)
    elif how == "json":
        resp = await http.post(url(emu, "sendMessage"), json={**params, "chat_id": int(CHAT)})
    else:
        resp = await http.get(url(emu, "sendMessage"), params=params)
    assert resp.status_code == 200
    body = resp.json()
    assert body["ok"] is True
    result = body["result"]
    assert list(result) == ["message_id", "date", "text", "from", "chat"]
    assert result["message_id"] == 1
    assert result["text"] == "Your parcel has arrived."
    assert result["from"]["is_bot"] is True
    assert result["chat"] == {"id": 123456789, "first_name": "Anna", "type": "private"}
    assert emu.outbox[0].id == f"{CHAT}:1"


async def test_message_ids_count_per_chat(http: httpx.AsyncClient, emu: TelegramEmulator) -> None:
    """message_id is unique only inside one chat."""
    ids = []
    for chat in (CHAT, CHAT, "555"):
        resp = await http.post(url(emu, "sendMessage"), data={"chat_id": chat, "text": "x"})
        ids.append(resp.json()["result"]["message_id"])
    assert ids == [1, 2, 1]


@pytest.mark.parametrize(
    ("token", "status", "description"),
    [("not-a-token", 404, "Not Found"), ("7000000001:WRONG", 401, "Unauthorized")],
)
async def test_tokens(
    http: httpx.AsyncClient, emu: TelegramEmulator, token: str, status: int, description: str
) -> None:
    """A malformed token is 404 Not Found, a well-formed wrong one 401 Unauthorized."""
    resp = await http.post(url(emu, "getMe", token))
    assert resp.status_code == status
    assert resp.json() == {"ok": False, "error_code": status, "description": description}


async def test_unknown_method_is_404(http: httpx.AsyncClient, emu: TelegramEmulator) -> None:
    """A method the emulator does not know is 404 Not Found, as the Bot API answers."""
    resp = await http.post(url(emu, "sendPigeon"))
    assert resp.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


@pytest.mark.parametrize(
    ("text", "mode", "shown", "error"),
    [
        (
            "Your parcel *A\\-1234* has arrived\\.",
            "MarkdownV2",
            "Your parcel A-1234 has arrived.",
            None,
        ),
        ("Parcel A-1234.", "MarkdownV2", None, "Character '-' is reserved"),
        ("*bold", "MarkdownV2", None, "Can't find end of the entity starting at byte offset 0"),
        ("[site](https://x.example/a\\)b) and `co\\`de`", "MarkdownV2", "site and co`de", None),
        ("<b>A-1234</b> &amp; more", "HTML", "A-1234 & more", None),
        ("<b>open", "HTML", None, 'Can\'t find end tag corresponding to start tag "b"'),
        ("<blink>x</blink>", "HTML", None, 'Unsupported start tag "blink"'),
        ("1 < 2", "HTML", None, "Unsupported start tag"),
        ("*bold* _it_", "Markdown", "bold it", None),
    ],
)
async def test_parse_modes(
    http: httpx.AsyncClient,
    emu: TelegramEmulator,
    text: str,
    mode: str,
    shown: str | None,
    error: str | None,
) -> None:
    """Text is parsed in its mode: shown without markup, or 400 can't parse entities."""
    resp = await http.post(
        url(emu, "sendMessage"), data={"chat_id": CHAT, "text": text, "parse_mode": mode}
    )
    if error is None:
        assert resp.json()["result"]["text"] == shown
    else:
        assert resp.status_code == 400
        description = resp.json()["description"]
        assert description.startswith("Bad Request: can't parse entities: ")
        assert error in description


async def test_length_is_counted_after_parsing(
    http: httpx.AsyncClient, emu: TelegramEmulator
) -> None:
    """4096 shown characters pass even with markup around them; 4097 is too long; empty
    text is refused."""
    ok = await http.post(
        url(emu, "sendMessage"),
        data={"chat_id": CHAT, "text": "*" + "a" * 4096 + "*", "parse_mode": "MarkdownV2"},
    )
    assert ok.status_code == 200
    long = await http.post(url(emu, "sendMessage"), data={"chat_id": CHAT, "text": "a" * 4097})
    assert long.json()["description"] == "Bad Request: message is too long"
    empty = await http.post(url(emu, "sendMessage"), data={"chat_id": CHAT, "text": ""})
    assert empty.json()["description"] == "Bad Request: message text is empty"


@pytest.mark.parametrize("name", sorted(set(ERRORS) - {"bad_gateway"}))
async def test_each_named_error(http: httpx.AsyncClient, emu: TelegramEmulator, name: str) -> None:
    """Each named error is {"ok": false, error_code, description} with its HTTP status."""
    emu.script(CHAT, name)
    resp = await http.post(url(emu, "sendMessage"), data={"chat_id": CHAT, "text": "x"})
    error = ERRORS[name]
    assert resp.status_code == error.status
    body = resp.json()
    assert body["ok"] is False
    assert body["error_code"] == error.status
    if name != "rate_limited":
        assert body["description"] == error.description


async def test_rate_limited_carries_retry_after(
    http: httpx.AsyncClient, emu: TelegramEmulator
) -> None:
    """429: description, parameters.retry_after and the Retry-After header agree."""
    emu.script(CHAT, "rate_limited", retry_after=12)
    resp = await http.post(url(emu, "sendMessage"), data={"chat_id": CHAT, "text": "x"})
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "12"
    assert resp.json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 12",
        "parameters": {"retry_after": 12},
    }


async def test_bad_gateway_is_not_json(http: httpx.AsyncClient, emu: TelegramEmulator) -> None:
    """bad_gateway answers a proxy's HTML page, an answer no JSON reader classifies."""
    emu.script(CHAT, "bad_gateway")
    resp = await http.post(url(emu, "sendMessage"), data={"chat_id": CHAT, "text": "x"})
    assert resp.status_code == 502
    assert resp.headers["content-type"].startswith("text/html")


async def test_delete_message(http: httpx.AsyncClient, emu: TelegramEmulator) -> None:
    """A sent message can be deleted once; an unknown one is 'message to delete not found'."""
    await http.post(url(emu, "sendMessage"), data={"chat_id": CHAT, "text": "x"})
    first = await http.post(url(emu, "deleteMessage"), data={"chat_id": CHAT, "message_id": 1})
    assert first.json() == {"ok": True, "result": True}
    again = await http.post(url(emu, "deleteMessage"), data={"chat_id": CHAT, "message_id": 1})
    assert again.json()["description"] == "Bad Request: message to delete not found"
    assert emu.deleted == [(CHAT, 1)]


async def test_start_event_posts_an_update_with_the_secret(
    emu: TelegramEmulator, receiver: Receiver
) -> None:
    """A customer opening the bot posts /start <payload> with the secret token header."""
    [hook] = await emu.event("start", CHAT, payload="parcel-A-1234")
    assert hook.delivered
    hit = receiver.posts()[-1]
    assert hit.path == "/receipts/telegram"
    assert hmac.compare_digest(hit.headers["x-telegram-bot-api-secret-token"], "s3cret-Token_1")
    update = json.loads(hit.body)
    assert update["message"]["text"] == "/start parcel-A-1234"
    assert update["message"]["chat"]["id"] == 123456789
    assert update["message"]["entities"] == [{"offset": 0, "length": 6, "type": "bot_command"}]


async def test_block_makes_sends_forbidden_until_start(
    http: httpx.AsyncClient, emu: TelegramEmulator, receiver: Receiver
) -> None:
    """Blocking posts my_chat_member 'kicked' and later sends are 403; /start lifts it."""
    await emu.event("block", CHAT)
    update = json.loads(receiver.posts()[-1].body)
    assert update["my_chat_member"]["new_chat_member"]["status"] == "kicked"
    resp = await http.post(url(emu, "sendMessage"), data={"chat_id": CHAT, "text": "x"})
    assert (resp.status_code, resp.json()["description"]) == (
        403,
        "Forbidden: bot was blocked by the user",
    )
    await emu.event("start", CHAT)
    resp = await http.post(url(emu, "sendMessage"), data={"chat_id": CHAT, "text": "x"})
    assert resp.status_code == 200


async def test_set_webhook_moves_the_updates(
    http: httpx.AsyncClient, emu: TelegramEmulator, receiver: Receiver
) -> None:
    """setWebhook sets the URL and the secret token that updates carry."""
    resp = await http.post(
        url(emu, "setWebhook"), data={"url": receiver.url + "/tg2", "secret_token": "other"}
    )
    assert resp.json() == {"ok": True, "result": True, "description": "Webhook was set"}
    await emu.event("message", CHAT, text="hi")
    assert receiver.posts()[-1].path == "/receipts/tg2"
    assert receiver.posts()[-1].headers["x-telegram-bot-api-secret-token"] == "other"


async def test_no_receipts_ever(
    http: httpx.AsyncClient, emu: TelegramEmulator, clock: FakeClock, receiver: Receiver
) -> None:
    """The Bot API has no delivery receipts: 'read' accepts and posts nothing."""
    emu.script(CHAT, "read")
    await http.post(url(emu, "sendMessage"), data={"chat_id": CHAT, "text": "x"})
    await clock.advance(60)
    assert receiver.posts() == []


async def test_the_token_never_reaches_a_log_line(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """Log lines show /bot<token>/…, never the token."""
    lines: list[str] = []
    async with TelegramEmulator(clock=clock, log=lines.append) as emu:
        await http.post(url(emu, "sendMessage"), data={"chat_id": CHAT, "text": "x"})
    assert lines
    assert all(TOKEN not in line and TOKEN.split(":")[1] not in line for line in lines)
    assert "/bot<token>/sendMessage" in lines[0]


# -- python-telegram-bot itself --------------------------------------------------------


def bot(emu: TelegramEmulator, token: str = TOKEN) -> telegram.Bot:
    return telegram.Bot(token, base_url=f"{emu.api_url}/bot")


async def test_ptb_get_me_and_send_message(emu: TelegramEmulator) -> None:
    """python-telegram-bot initialises (getMe) and sends through the emulator."""
    async with bot(emu) as b:
        assert b.bot.username == "acme_notify_bot"
        message = await b.send_message(chat_id=int(CHAT), text="Your parcel has arrived.")
        assert message.message_id == 1
        assert message.chat.id == 123456789
        assert message.text == "Your parcel has arrived."
    parsed: Any = emu.requests[-1].parsed
    assert parsed["chat_id"] == CHAT
    assert emu.requests[-1].headers["content-type"] == "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("name", "exc", "text"),
    [
        ("blocked", telegram.error.Forbidden, "Forbidden: bot was blocked by the user"),
        ("chat_not_found", telegram.error.BadRequest, "Chat not found"),
        ("server_error", telegram.error.NetworkError, "Internal Server Error"),
    ],
)
async def test_ptb_maps_the_errors(
    emu: TelegramEmulator, name: str, exc: type[Exception], text: str
) -> None:
    """PTB raises what it raises against the real Bot API."""
    async with bot(emu) as b:
        emu.script(CHAT, name)
        with pytest.raises(exc) as caught:
            await b.send_message(chat_id=int(CHAT), text="x")
    assert text in str(caught.value)


async def test_ptb_retry_after_and_bad_token(
    emu: TelegramEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """429 becomes RetryAfter with the wait; a wrong token InvalidToken at initialise."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    async with bot(emu) as b:
        emu.script(CHAT, "rate_limited", retry_after=3)
        with pytest.raises(telegram.error.RetryAfter) as caught:
            await b.send_message(chat_id=int(CHAT), text="x")
        assert caught.value.retry_after == dt.timedelta(seconds=3)
    with pytest.raises(telegram.error.InvalidToken):
        async with bot(emu, "7000000001:WRONG"):
            pass
