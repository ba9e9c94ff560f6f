"""`type: telegram_bot`: python-telegram-bot itself, against the Telegram emulator over
real HTTP on loopback: settings, what goes out, the answer → outcome table, the token
kept out of logs, updates in, withdrawal, and a cascade through the notifier."""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cascade_notify import (
    DeliveryStatus,
    Message,
    Notifier,
    PermanentError,
    PolicyError,
    ProviderError,
    Recipient,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
    WaitFor,
)
from cascade_notify.models import SignalKind
from cascade_notify.policy import load_config
from cascade_notify.providers import registry
from cascade_notify.providers._signing import BadSignature
from cascade_notify.providers.base import SendRequest, WebhookRequest, send_classified
from cascade_notify.providers.telegram import (
    TelegramOverrides,
    TelegramProvider,
    TelegramSettings,
    escape,
    translate,
    utf16_length,
)
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import TelegramEmulator
from cascade_notify.testing.emulators._markup import plain_text

CHAT = "123456789"
SECRET = "s3cret-Token_1"
TEXT = "Your parcel A-1234 has arrived."


@pytest.fixture
async def emu(fake_clock: FakeClock) -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(clock=fake_clock, secret_token=SECRET) as e:
        yield e


def make(emu: TelegramEmulator, clock: FakeClock, **settings: Any) -> TelegramProvider:
    values: dict[str, Any] = {
        "token": emu.token,
        "api_url": emu.api_url,
        "secret_token": SECRET,
        **settings,
    }
    return TelegramProvider("tg", TelegramSettings(**values), clock=clock)


@pytest.fixture
async def tg(emu: TelegramEmulator, fake_clock: FakeClock) -> AsyncIterator[TelegramProvider]:
    provider = make(emu, fake_clock)
    await provider.start()
    yield provider
    await provider.aclose()


def request(
    text: str = TEXT, address: str = CHAT, overrides: dict[str, Any] | None = None
) -> SendRequest:
    return SendRequest(
        attempt_id="att-1",
        delivery_id="del-1",
        channel="telegram",
        address=address,
        recipient=Recipient(id="anna", telegram=address),
        message=Message(text=text),
        overrides=TelegramProvider.check_overrides(overrides or {}, channel="telegram"),
    )


def sends(emu: TelegramEmulator) -> list[Any]:
    return [r for r in emu.requests if r.path.endswith("/sendMessage")]


# settings


def test_registered_and_loaded_from_yaml() -> None:
    """`type: telegram_bot` is built in, on `telegram`, with its settings from YAML."""
    assert registry.get("telegram_bot") is TelegramProvider
    config = load_config("""
providers:
  tg: {type: telegram_bot, token: "123456:ABC-def_ghi", api_url: "http://127.0.0.1:9/",
       timeout: 3s, parse_mode: HTML, secret_token: "abc_DEF-1"}
policies:
  p:
    steps: [{channel: telegram, providers: [tg], wait_for: accepted}]
""")
    spec = config.providers["tg"]
    assert spec.channel == "telegram"
    settings = spec.settings
    assert isinstance(settings, TelegramSettings)
    assert (settings.api_url, settings.timeout, settings.parse_mode) == (
        "http://127.0.0.1:9",
        3.0,
        "HTML",
    )
    assert "ABC-def_ghi" not in repr(settings)


@pytest.mark.parametrize("wait_for", ["delivered", "read"])
def test_waiting_for_a_receipt_is_a_policy_error(wait_for: str) -> None:
    """The Bot API gives no receipts: a step waiting for one is refused at load, by name."""
    assert TelegramProvider.can_satisfy(WaitFor.ACCEPTED)
    assert not TelegramProvider.can_satisfy(WaitFor(wait_for))
    with pytest.raises(PolicyError) as caught:
        load_config(f"""
providers:
  tg: {{type: telegram_bot, token: "123456:ABC"}}
policies:
  p:
    steps: [{{channel: telegram, providers: [tg], wait_for: {wait_for}}}]
""")
    text = str(caught.value)
    assert "policies.p.steps[0]" in text and "tg" in text


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("token", "not-a-token-SECRETISH", "looks like"),
        ("secret_token", "has spaces SECRETISH", "secret_token must be"),
        ("api_url", "ftp://x", "http"),
        ("parse_mode", "Markdown", "MarkdownV2"),
    ],
)
def test_bad_settings_are_refused_without_echoing_secrets(key: str, value: str, says: str) -> None:
    """A malformed setting fails the load with a reason; a secret's value is not shown."""
    settings = {"token": "123456:ABC", key: value}
    inline = ", ".join(f'{k}: "{v}"' for k, v in settings.items())
    with pytest.raises(PolicyError) as caught:
        load_config(f"""
providers:
  tg: {{type: telegram_bot, {inline}}}
policies:
  p:
    steps: [{{channel: telegram, providers: [tg]}}]
""")
    assert says in str(caught.value)
    if key in ("token", "secret_token"):
        assert "SECRETISH" not in str(caught.value)


def test_overrides_are_typed() -> None:
    """Overrides take text, parse_mode, disable_notification and reply_markup; others fail."""
    given = TelegramProvider.check_overrides(
        {"parse_mode": "HTML", "disable_notification": True}, channel="telegram"
    )
    assert isinstance(given, TelegramOverrides) and given.parse_mode == "HTML"
    for bad in ({"template": "x"}, {"parse_mode": "BBCode"}, {"reply_markup": {"x": 1}}):
        with pytest.raises(ValueError, match=r"overrides\['telegram'\]"):
            TelegramProvider.check_overrides(bad, channel="telegram")


def test_a_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without python-telegram-bot, making the provider says which extra to install."""
    monkeypatch.setitem(sys.modules, "telegram", None)
    with pytest.raises(ImportError, match=r"cascade-notify\[telegram\]"):
        TelegramProvider("tg", TelegramSettings(token="123456:ABC"))


# out


async def test_start_is_get_me_and_a_wrong_token_fails_it(
    emu: TelegramEmulator, fake_clock: FakeClock
) -> None:
    """start() runs PTB's initialize (getMe); a token the API refuses fails it, for the
    whole account."""
    provider = make(emu, fake_clock)
    await provider.start()
    assert [r.path for r in emu.requests] == ["/bot" + emu.token + "/getMe"]
    assert provider.bot.username == "acme_notify_bot"
    await provider.aclose()
    wrong = make(emu, fake_clock, token="7000000001:WRONG")
    with pytest.raises(PermanentError) as caught:
        await wrong.start()
    assert caught.value.account and caught.value.code == "bad_token"
    await wrong.aclose()


async def test_success_is_what_the_emulator_recorded(
    tg: TelegramProvider, emu: TelegramEmulator
) -> None:
    """A send is one form-encoded sendMessage; the id is chat_id:message_id."""
    first = await tg.send(request())
    second = await tg.send(request())
    assert (first.provider_message_id, second.provider_message_id) == (
        f"{CHAT}:1",
        f"{CHAT}:2",
    )
    [record, _] = sends(emu)
    assert record.method == "POST"
    assert record.headers["content-type"] == "application/x-www-form-urlencoded"
    assert record.parsed == {"chat_id": CHAT, "text": TEXT}
    assert [m.text for m in emu.sent_to(CHAT)] == [TEXT, TEXT]


async def test_overrides_go_out(tg: TelegramProvider, emu: TelegramEmulator) -> None:
    """Authored markup in `text` goes as written; the flags and keyboard are sent."""
    keyboard = {"inline_keyboard": [[{"text": "Track", "url": "https://example.com/t"}]]}
    authored = {"text": "<b>Parcel</b> A&amp;B", "parse_mode": "HTML"}
    await tg.send(
        request(overrides={**authored, "disable_notification": True, "reply_markup": keyboard})
    )
    await tg.send(request(overrides={"text": "*Parcel* A\\-1", "parse_mode": "MarkdownV2"}))
    await tg.send(request("<b>1 & 2</b>", overrides={"parse_mode": "HTML"}))
    first, second, third = (r.parsed for r in sends(emu))
    assert first["text"] == "<b>Parcel</b> A&amp;B"
    assert first["parse_mode"] == "HTML" and first["disable_notification"] == "true"
    assert json.loads(first["reply_markup"]) == keyboard
    assert second == {"chat_id": CHAT, "text": "*Parcel* A\\-1", "parse_mode": "MarkdownV2"}
    assert third["text"] == "&lt;b&gt;1 &amp; 2&lt;/b&gt;"
    shown = [m.text for m in emu.sent_to(CHAT)]
    assert shown == ["Parcel A&B", "Parcel A-1", "<b>1 & 2</b>"]


HOSTILE = [
    "Total: 1.5 * 2 = 3! (really) [not a link](x) `code` ~strike~ >quote #tag +1 -1 {x} |y|",
    "back\\slash \\* \\\\ _under_ *bold* __u__ ||spoiler|| .!",
    "<b>not bold</b> & &amp; <script>alert(1)</script> a<b c>d",
    "emoji 🎉🇷🇺 and кириллица, zero\u200bwidth",
]


@pytest.mark.parametrize("mode", ["MarkdownV2", "HTML"])
@pytest.mark.parametrize("text", HOSTILE)
async def test_plain_text_is_escaped_for_the_parse_mode(
    emu: TelegramEmulator, fake_clock: FakeClock, mode: str, text: str
) -> None:
    """The message's plain text, escaped for the parse mode, shows exactly as written."""
    provider = make(emu, fake_clock, parse_mode=mode)
    await provider.send(request(text))
    await provider.aclose()
    assert sends(emu)[-1].parsed["parse_mode"] == mode
    assert emu.sent_to(CHAT)[-1].text == text


@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1))
@pytest.mark.parametrize("mode", ["MarkdownV2", "HTML"])
def test_escape_round_trips_any_text(mode: str, text: str) -> None:
    """Any text escaped for a parse mode parses back to itself."""
    assert plain_text(escape(text, mode), mode) == text


def test_escape_sets() -> None:
    """MarkdownV2 escapes its 18 specials and the backslash; HTML only &, < and >."""
    specials = "_*[]()~`>#+-=|{}.!"
    assert escape(specials + "\\", "MarkdownV2") == "".join("\\" + c for c in specials + "\\")
    assert escape('<a href="x">&</a>', "HTML") == '&lt;a href="x"&gt;&amp;&lt;/a&gt;'
    assert escape("*x*", "none") == "*x*"
    with pytest.raises(ValueError, match="parse_mode"):
        escape("x", "BBCode")


async def test_the_limit_is_4096_utf16_units(tg: TelegramProvider, emu: TelegramEmulator) -> None:
    """4096 UTF-16 units go; one more fails without a call (an emoji counts two)."""
    assert utf16_length("🎉") == 2
    await tg.send(request("🎉" * 2048))
    result = await send_classified(tg, request("🎉" * 2048 + "x"))
    assert isinstance(result, PermanentError) and result.code == "too_long"
    assert len(sends(emu)) == 1


# the answer → outcome table (providers.md §2.4)

TABLE = [
    ("blocked", UnreachableError, "blocked", "blocked"),
    ("deactivated", UnreachableError, "deactivated", "deactivated"),
    ("not_started", UnreachableError, "not_started", None),
    ("kicked", UnreachableError, "kicked", None),
    ("not_member", UnreachableError, "not_member", None),
    ("chat_not_found", UnreachableError, "chat_not_found", None),
    ("private_chat_not_found", UnreachableError, "chat_not_found", None),
    ("peer_id_invalid", UnreachableError, "peer_id_invalid", None),
    ("migrated", PermanentError, "migrated", None),
    ("too_long", PermanentError, "too_long", None),
    ("empty", PermanentError, "empty", None),
    ("parse_error", PermanentError, "parse_entities", None),
    ("rate_limited", TransientError, "429", None),
    ("server_error", TransientError, "500", None),
    ("bad_gateway", TransientError, "502", None),
]


@pytest.mark.parametrize(("name", "cls", "code", "gone"), TABLE)
async def test_answer_table(
    tg: TelegramProvider,
    emu: TelegramEmulator,
    name: str,
    cls: type[ProviderError],
    code: str,
    gone: str | None,
) -> None:
    """Each documented error becomes its class, in one call."""
    emu.script(CHAT, name)
    result = await send_classified(tg, request())
    assert type(result) is cls, result
    assert result.code == code and result.provider == "tg"
    if isinstance(result, UnreachableError):
        assert result.gone == gone
    assert len(sends(emu)) == 1


async def test_a_refused_token_opens_the_breaker(
    tg: TelegramProvider, emu: TelegramEmulator
) -> None:
    """401 on a send is permanent for the whole account."""
    emu.script(CHAT, "bad_token")
    result = await send_classified(tg, request())
    assert isinstance(result, PermanentError) and result.account


@pytest.mark.parametrize("timedelta_env", [True, False])
async def test_429_honours_retry_after(
    tg: TelegramProvider,
    emu: TelegramEmulator,
    monkeypatch: pytest.MonkeyPatch,
    timedelta_env: bool,
) -> None:
    """parameters.retry_after becomes TransientError.retry_after, whatever PTB_TIMEDELTA."""
    if timedelta_env:
        monkeypatch.setenv("PTB_TIMEDELTA", "true")
    else:
        monkeypatch.delenv("PTB_TIMEDELTA", raising=False)
    emu.script(CHAT, "rate_limited", retry_after=12)
    result = await send_classified(tg, request())
    assert isinstance(result, TransientError) and result.retry_after == 12.0


@pytest.mark.parametrize(
    ("description", "cls", "code"),
    [
        ("Forbidden: bot can't send messages to bots", UnreachableError, "forbidden"),
        ("Bad Request: message thread not found", PermanentError, "bad_request"),
    ],
)
async def test_unknown_descriptions_fail_safe(
    tg: TelegramProvider,
    emu: TelegramEmulator,
    description: str,
    cls: type[ProviderError],
    code: str,
) -> None:
    """A 403 nobody listed is still about the chat; a 400 nobody listed is permanent."""
    named = "blocked" if description.startswith("Forbidden") else "chat_not_found"
    emu.script(CHAT, {"do": named, "detail": description})
    result = await send_classified(tg, request())
    assert type(result) is cls and result.code == code


async def test_a_hang_up_after_the_request_is_an_unknown_outcome(
    tg: TelegramProvider, emu: TelegramEmulator
) -> None:
    """The server read the request and hung up: it may have been sent."""
    emu.script(CHAT, {"do": "hang_up", "then": "deliver"})
    result = await send_classified(tg, request())
    assert isinstance(result, UnknownOutcomeError)
    assert len(emu.sent_to(CHAT)) == 1


async def test_a_timeout_after_the_request_is_an_unknown_outcome(
    emu: TelegramEmulator, fake_clock: FakeClock
) -> None:
    """No answer within `timeout` (the emulator's answer waits on the fake clock)."""
    provider = make(emu, fake_clock, timeout=0.2)
    await provider.start()
    emu.script(CHAT, "slow", seconds=60)
    result = await send_classified(provider, request())
    await provider.aclose()
    await fake_clock.advance(60)  # the emulator's pending answer, so it stops at once
    assert isinstance(result, UnknownOutcomeError)


async def test_an_injected_client_and_an_unclassified_status(fake_clock: FakeClock) -> None:
    """Over an injected httpx client, a status nobody classified fails safe: permanent,
    with the raw answer bounded."""
    seen: list[httpx.Request] = []

    def answer(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.url.path.endswith("/getMe"):
            return httpx.Response(
                200, json={"ok": True, "result": {"id": 1, "is_bot": True, "first_name": "B"}}
            )
        return httpx.Response(418, text="teapot " * 500)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        provider = TelegramProvider(
            "tg",
            TelegramSettings(token="123456:ABC", api_url="http://api.test"),
            clock=fake_clock,
            client=client,
        )
        result = await send_classified(provider, request())
        await provider.aclose()
    assert [str(r.url) for r in seen] == [
        "http://api.test/bot123456:ABC/getMe",
        "http://api.test/bot123456:ABC/sendMessage",
    ]
    assert isinstance(result, PermanentError) and not result.account
    assert result.code == "418" and "unclassified" in str(result)
    assert len(str(result)) < 400


def test_translate_fails_safe_on_what_nobody_classified() -> None:
    """Conflict, an unknown TelegramError, or a foreign exception: permanent, bounded,
    with no token in the text."""
    import telegram.error

    token = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ012345678"
    for exc in (
        telegram.error.Conflict("Conflict: terminated by other getUpdates request"),
        telegram.error.TelegramError("odd " * 1000),
        KeyError(f"http://x/bot{token}/sendMessage"),
    ):
        error = translate(exc, provider="tg")
        assert type(error) is PermanentError and error.code == "unclassified"
        assert len(error.args[0]) <= 300 and token not in str(error)
    timed_out = translate(telegram.error.TimedOut(), provider="tg")
    assert isinstance(timed_out, UnknownOutcomeError)


# the token never in a log line


async def test_no_token_in_any_log_line_at_debug(
    emu: TelegramEmulator, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Over a run with success, every kind of failure, and an injected httpx client (which
    logs each URL at INFO), no log line shows the token."""
    caplog.set_level(logging.DEBUG)
    provider = make(emu, fake_clock, timeout=0.5)
    await provider.start()
    script = ["deliver", "blocked", "rate_limited", "server_error", "bad_gateway", "bad_token"]
    emu.script(CHAT, [*script, {"do": "hang_up"}, "deliver"])
    for _ in range(len(script) + 2):
        await send_classified(provider, request())
    await provider.withdraw(f"{CHAT}:1")
    await provider.aclose()
    async with httpx.AsyncClient() as client:
        injected = TelegramProvider(
            "tg2",
            TelegramSettings(token=emu.token, api_url=emu.api_url),
            clock=fake_clock,
            client=client,
        )
        await injected.send(request())
        await injected.aclose()
        logging.getLogger("httpx").exception("failed: %s", f"{emu.api_url}/bot{emu.token}/x")
    secret_part = emu.token.split(":", 1)[1]
    lines = caplog.text + "".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert any(r.name == "httpx" and "sendMessage" in r.getMessage() for r in caplog.records)
    assert any(r.name == "telegram.Bot" for r in caplog.records)
    assert "/bot<token>/" in lines
    assert emu.token not in lines and secret_part not in lines


# updates in


def update_request(hook: Any, secret: str | None = SECRET) -> WebhookRequest:
    headers = {k.lower(): v for k, v in hook.headers.items()}
    headers.pop("x-telegram-bot-api-secret-token", None)
    if secret is not None:
        headers["x-telegram-bot-api-secret-token"] = secret
    return WebhookRequest("POST", "http://127.0.0.1/receipts/tg", headers, hook.body)


async def test_start_with_a_payload_is_a_linked_signal(
    tg: TelegramProvider, emu: TelegramEmulator, fake_clock: FakeClock
) -> None:
    """`/start <payload>` links the chat; the payload is the signal's token, unverified
    (the notifier checks it and names the recipient)."""
    [hook] = await emu.event("start", CHAT, payload="anna-42")
    inbound = await tg.receive(update_request(hook))
    [signal] = inbound.signals
    assert (signal.kind, signal.channel, signal.address, signal.reason) == (
        SignalKind.LINKED,
        "telegram",
        CHAT,
        "start",
    )
    assert signal.token == "anna-42" and signal.recipient_id is None
    assert signal.provider == "tg"
    assert signal.ts == int(fake_clock.now())
    assert inbound.receipts == () and inbound.answer is None


async def test_blocking_the_bot_is_a_gone_signal(
    tg: TelegramProvider, emu: TelegramEmulator
) -> None:
    """my_chat_member with status kicked in a private chat: gone, reason blocked."""
    [hook] = await emu.event("block", CHAT)
    [signal] = (await tg.receive(update_request(hook))).signals
    assert (signal.kind, signal.address, signal.reason) == (SignalKind.GONE, CHAT, "blocked")


@pytest.mark.parametrize(
    ("event", "data"),
    [("message", {"text": "hello"}), ("start", {}), ("unblock", {})],
)
async def test_other_updates_are_acknowledged(
    tg: TelegramProvider, emu: TelegramEmulator, event: str, data: dict[str, str]
) -> None:
    """A plain message, `/start` without payload, an unblock: nothing, answered 200."""
    [hook] = await emu.event(event, CHAT, **data)
    inbound = await tg.receive(update_request(hook))
    assert inbound.signals == () and inbound.receipts == () and inbound.answer is None


@pytest.mark.parametrize("secret", [None, "wrong", "", SECRET + "x"])
async def test_a_wrong_or_missing_secret_is_403(
    tg: TelegramProvider, emu: TelegramEmulator, secret: str | None
) -> None:
    """Without the exact secret token the update is refused with 403, unread."""
    [hook] = await emu.event("block", CHAT)
    with pytest.raises(BadSignature) as caught:
        await tg.receive(update_request(hook, secret))
    assert caught.value.status == 403


async def test_no_secret_configured_refuses_every_update(
    emu: TelegramEmulator, fake_clock: FakeClock
) -> None:
    """A provider without secret_token takes no updates at all."""
    provider = make(emu, fake_clock, secret_token=None)
    [hook] = await emu.event("block", CHAT)
    with pytest.raises(BadSignature, match="secret_token") as caught:
        await provider.receive(update_request(hook))
    assert caught.value.status == 403


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"update_id": "1"}'])
async def test_a_malformed_update_is_a_value_error(tg: TelegramProvider, body: bytes) -> None:
    """A verified body that is not an Update is malformed (400)."""
    headers = {"x-telegram-bot-api-secret-token": SECRET}
    with pytest.raises(ValueError, match=r"JSON|Update"):
        await tg.receive(WebhookRequest("POST", "http://x/receipts/tg", headers, body))


# withdraw


async def test_withdraw_deletes_the_message(tg: TelegramProvider, emu: TelegramEmulator) -> None:
    """withdraw() is deleteMessage; a message already gone answers False."""
    sent = await tg.send(request())
    assert await tg.withdraw(sent.provider_message_id) is True
    assert emu.deleted == [(CHAT, 1)]
    assert await tg.withdraw(sent.provider_message_id, CHAT) is False
    with pytest.raises(ValueError, match="chat_id:message_id"):
        await tg.withdraw("nonsense")


# through the notifier

POLICY = """
providers:
  tg: {{type: telegram_bot, token: "{token}", api_url: "{api_url}", secret_token: "{secret}"}}
  sms: {{type: fake, channel: sms, behavior: deliver, receipt_delay: 5s}}
policies:
  service:
    steps:
      - {{channel: telegram, providers: [tg], wait_for: accepted, retry: {{attempts: 3}}}}
      - {{channel: sms, providers: [sms], timeout: 5m}}
"""


async def test_a_cascade_through_the_notifier(emu: TelegramEmulator, fake_clock: FakeClock) -> None:
    """Accepted by the Bot API: delivered on telegram. Blocked: on to SMS at once, after
    one call, and the block arriving as an update is recorded as a signal."""
    policy = POLICY.format(token=emu.token, api_url=emu.api_url, secret=SECRET)
    notifier = Notifier.from_yaml(policy, clock=fake_clock, store="memory://")
    anna = Recipient(id="anna", telegram=CHAT, sms="+79161234567")
    boris = Recipient(id="boris", telegram="987654321", sms="+79161234568")
    emu.script("987654321", "blocked")
    async with notifier:
        first = await notifier.send(anna, Message(text=TEXT))
        second = await notifier.send(boris, Message(text=TEXT))
        done = await run_until_final(notifier, fake_clock, [first.id, second.id])
        [hook] = await emu.event("block", CHAT)
        answer = await notifier.handle_webhook(
            "tg",
            method="POST",
            url="http://127.0.0.1/receipts/tg",
            headers={"x-telegram-bot-api-secret-token": SECRET},
            body=hook.body,
        )
    delivered, moved_on = done
    assert delivered.status is DeliveryStatus.DELIVERED and delivered.channel == "telegram"
    assert [a.provider_message_id for a in delivered.attempts] == [f"{CHAT}:1"]
    assert moved_on.status is DeliveryStatus.DELIVERED and moved_on.channel == "sms"
    assert [(a.provider, a.status.value) for a in moved_on.attempts] == [
        ("tg", "unreachable"),
        ("sms", "delivered"),
    ]
    assert moved_on.attempts[1].started_ts == moved_on.attempts[0].started_ts  # at once
    assert sorted(r.address for r in sends(emu)) == sorted([CHAT, "987654321"])  # concurrent
    assert answer.status == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_telegram_away_at_start_does_not_stop_the_notifier(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Telegram unreachable when the app starts (blocked, down) is the outage a cascade
    is for: the notifier starts, the warning says so, the first send asks getMe again
    and, once the API answers, goes out; a wrong token still fails the start."""
    port = _free_port()
    token = "7000000001:AAemulator-test-token_0000000000000"
    provider = TelegramProvider(
        "tg", TelegramSettings(token=token, api_url=f"http://127.0.0.1:{port}"), clock=fake_clock
    )
    with caplog.at_level(logging.WARNING, logger="cascade_notify"):
        await provider.start()
    assert "Telegram unreachable at start" in caplog.text
    result = await send_classified(provider, request())  # refused: nothing was sent
    assert isinstance(result, TransientError)
    assert result.code == "connect"
    async with TelegramEmulator(clock=fake_clock, port=port, token=token) as emu:
        result = await provider.send(request())
        assert [r.path.rsplit("/", 1)[1] for r in emu.requests] == ["getMe", "sendMessage"]
        assert result.provider_message_id == f"{CHAT}:1"
    await provider.aclose()


async def test_a_cascade_starts_and_moves_on_while_telegram_is_away(
    fake_clock: FakeClock,
) -> None:
    """Through the notifier: the start succeeds and the delivery ends on the next step."""
    config = load_config(
        f"""
providers:
  tg: {{type: telegram_bot, token: "7000000001:AAemulator", api_url: "http://127.0.0.1:{_free_port()}"}}
  sms: {{type: fake, channel: sms}}
policies:
  p:
    steps:
      - {{channel: telegram, providers: [tg], wait_for: accepted, timeout: 30s}}
      - {{channel: sms, providers: [sms], wait_for: delivered, timeout: 1m}}
"""
    )
    async with Notifier(config, clock=fake_clock) as notifier:
        delivery = await notifier.send(
            Recipient(id="c", telegram=CHAT, sms="+79161234567"), Message(text=TEXT)
        )
        [final] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert final.status is DeliveryStatus.DELIVERED
    assert final.channel == "sms"
    assert final.attempts[0].channel == "telegram"
