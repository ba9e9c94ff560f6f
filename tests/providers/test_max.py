"""`max_bot` against the MAX emulator over loopback HTTP: the send, every error class of
providers.md §3a.4, the load-time check of `wait_for`, and the secret-bearing updates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cascade_notify import (
    DeliveryStatus,
    Message,
    Notifier,
    PolicyError,
    Recipient,
)
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.providers import registry
from cascade_notify.providers.base import SendRequest, send_classified
from cascade_notify.providers.max import MaxProvider
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import MaxEmulator

from .conftest import Inbox, answered

USER = "123456789"


@pytest.fixture
async def emu(fake_clock: FakeClock) -> AsyncIterator[MaxEmulator]:
    async with MaxEmulator(clock=fake_clock) as emulator:
        yield emulator


def provider(emu: MaxEmulator, **settings: Any) -> MaxProvider:
    values = {k: v for k, v in emu.settings().items() if k != "type"} | settings
    return MaxProvider("max", MaxProvider.Settings.model_validate(values))


def request(text: str = "Your parcel A-1234 has arrived.", address: str = USER) -> SendRequest:
    return SendRequest(
        attempt_id="att-1",
        delivery_id="del-1",
        channel="max",
        address=address,
        recipient=Recipient(id="anna", addresses={"max": address}),
        message=Message(text=text),
    )


async def test_send_is_accepted_with_the_mid(emu: MaxEmulator) -> None:
    """A send carries the bare token and user_id and returns `message.body.mid`."""
    max_bot = provider(emu)
    try:
        result = await max_bot.send(request())
    finally:
        await max_bot.aclose()
    [sent] = emu.sent_to(USER)
    assert result.provider_message_id == sent.id and sent.id.startswith("mid.")
    [record] = emu.requests
    assert record.headers["authorization"] == emu.token  # no `Bearer`
    assert record.query == {"user_id": USER}
    assert record.json() == {"text": "Your parcel A-1234 has arrived.", "notify": True}


async def test_registered_as_a_builtin() -> None:
    """`type: max_bot` is a built-in with no receipts and signals on."""
    cls = registry.get("max_bot")
    assert cls is MaxProvider
    assert cls.receipts == frozenset() and cls.signals and not cls.idempotent_sends


ERROR_TABLE: list[tuple[Any, type[ProviderError], dict[str, Any]]] = [
    ("bad_token", PermanentError, {"account": True, "code": "verify.token"}),
    ("stopped", UnreachableError, {"gone": "bot_stopped", "code": "chat.denied"}),
    ("no_access", UnreachableError, {"gone": None, "code": "chat.denied"}),
    ("not_started", UnreachableError, {"gone": None, "code": "dialog.not.found"}),
    ("chat_not_found", UnreachableError, {"code": "chat.not.found"}),
    ("user_not_found", UnreachableError, {"code": "user.not.found"}),
    ("bad_request", PermanentError, {"account": False, "code": "proto.payload"}),
    ("too_long", PermanentError, {"account": False}),
    ("attachment_not_ready", TransientError, {"retry_after": 1.0}),
    ("method_not_allowed", PermanentError, {"account": False, "code": "405"}),
    ("rate_limited", TransientError, {"retry_after": 1.0, "code": "too.many.requests"}),
    ({"do": "rate_limited", "retry_after": 3}, TransientError, {"retry_after": 3.0}),
    ("server_error", TransientError, {}),
    ("unavailable", TransientError, {"code": "service.unavailable"}),
    ("bad_gateway", TransientError, {"code": "502"}),
    ("other_403", UnreachableError, {"gone": None}),
    ("other_404", UnreachableError, {}),
    ("other_400", PermanentError, {"account": False}),
    ("hang_up", UnknownOutcomeError, {}),
]


@pytest.mark.parametrize(("script", "kind", "fields"), ERROR_TABLE)
async def test_error_table(
    emu: MaxEmulator, script: Any, kind: type[ProviderError], fields: dict[str, Any]
) -> None:
    """Each MAX error is classified by its code first, then by its status."""
    emu.script(USER, script)
    max_bot = provider(emu)
    try:
        with pytest.raises(kind) as caught:
            await max_bot.send(request())
    finally:
        await max_bot.aclose()
    assert type(caught.value) is kind
    for name, value in fields.items():
        assert getattr(caught.value, name) == value, name


async def test_wrong_token_and_long_text(emu: MaxEmulator) -> None:
    """A wrong token is the emulator's 401 `verify.token` (account); text over 4000
    characters is refused before any call, and by the API if sent anyway."""
    wrong = provider(emu, token="Bearer " + emu.token)
    max_bot = provider(emu)
    try:
        with pytest.raises(PermanentError) as caught:
            await wrong.send(request())
        refused = await send_classified(max_bot, request("x" * 4001))
        with pytest.raises(PermanentError):
            await max_bot.send(request("x" * 4001))
        with pytest.raises(PermanentError, match="numeric user_id"):
            await max_bot.send(request(address="anna"))
    finally:
        await wrong.aclose()
        await max_bot.aclose()
    assert caught.value.account and caught.value.code == "verify.token"
    assert isinstance(refused, PermanentError) and refused.code == "too_long"
    assert len(emu.requests) == 2  # the wrong token, and the long text sent anyway


@pytest.mark.parametrize("wait_for", ["delivered", "read"])
def test_waiting_for_a_receipt_is_a_policy_error(wait_for: str) -> None:
    """MAX reports nothing after acceptance: `wait_for: delivered|read` fails at load."""
    policy = f"""
providers:
  max: {{type: max_bot, token: t}}
policies:
  p: {{steps: [{{channel: max, providers: [max], wait_for: {wait_for}}}]}}
"""
    with pytest.raises(PolicyError, match="cannot report"):
        Notifier.from_yaml(policy, store="memory://")


def test_settings_are_checked() -> None:
    """A missing CA bundle and a webhook secret MAX would refuse are errors at load."""
    for bad in ({"ca_bundle": "/no/such/ca.pem"}, {"webhook_secret": "bad secret!"}):
        with pytest.raises(ValueError):  # noqa: PT011  (pydantic says which setting)
            MaxProvider.Settings.model_validate({"token": "t", **bad})


def test_ca_bundle_gives_an_httpx_transport() -> None:
    """With `ca_bundle`, requests go through an httpx client trusting that file too."""
    import certifi

    settings = MaxProvider.Settings.model_validate({"token": "t", "ca_bundle": certifi.where()})
    assert MaxProvider("max", settings).injected
    assert not MaxProvider("max", MaxProvider.Settings.model_validate({"token": "t"})).injected


LINK_SECRET = "max-test-link-secret-0123456789abcdef"


def policy(emu: MaxEmulator) -> str:
    return f"""
links: {{secret: "{LINK_SECRET}"}}
providers:
  max: {{type: max_bot, token: "{emu.token}", api_url: "{emu.api_url}",
         webhook_secret: "{emu.secret}", username: "{emu.bot["username"]}"}}
  sms: {{type: fake, channel: sms}}
policies:
  service:
    steps:
      - {{channel: max, providers: [max], wait_for: accepted}}
      - {{channel: sms, providers: [sms], wait_for: delivered}}
"""


async def test_updates_through_the_notifier(
    emu: MaxEmulator, fake_clock: FakeClock, inbox: Inbox
) -> None:
    """A forged or missing secret is 401 and changes nothing; `bot_started` from the
    recipient's deep link links the address; `bot_stopped` makes the next cascade skip
    MAX for SMS."""
    emu.webhook_url = f"{inbox.url}/max"
    anna = Recipient(id="anna", addresses={"max": USER}, sms="+79161234567")
    async with Notifier.from_yaml(policy(emu), clock=fake_clock, store="memory://") as notifier:
        inbox.notifier = notifier
        first = await notifier.send(anna, Message(text="Parcel"))
        await answered(notifier, first.id)
        [done] = await run_until_final(notifier, fake_clock, [first.id])
        emu.secret = "wrong_Secret-0"
        [forged] = await emu.event("bot_stopped", USER)
        emu.secret = None
        [unsigned] = await emu.event("bot_stopped", USER)
        emu.secret = "test_Secret-42"
        emu.force(USER, None)
        second = await notifier.send(anna, Message(text="Still MAX"))
        await answered(notifier, second.id)
        [still] = await run_until_final(notifier, fake_clock, [second.id])
        [linked] = await emu.event("open_link", USER, link=notifier.link("max", "anna"))
        addresses = await notifier.addresses("anna")
        [stopped] = await emu.event("bot_stopped", USER)
        third = await notifier.send(anna, Message(text="Again"))
        [again] = await run_until_final(notifier, fake_clock, [third.id])
        [other] = await emu.event("message_created", USER)
    assert done.status is DeliveryStatus.DELIVERED and done.channel == "max"
    assert [a.status for a in forged.attempts][:1] == [401]
    assert [a.status for a in unsigned.attempts][:1] == [401]
    assert still.channel == "max"
    assert linked.delivered and addresses == {"max": USER}
    assert stopped.delivered and other.delivered
    assert [s.reason for s in again.skipped] == ["address_gone"] and again.channel == "sms"
    assert len(emu.outbox) == 2


async def test_update_with_delay_and_duplicate(
    emu: MaxEmulator, fake_clock: FakeClock, inbox: Inbox
) -> None:
    """A delayed update arrives when the fake clock passes it; a duplicate is taken twice
    without harm."""
    emu.webhook_url = f"{inbox.url}/max"
    async with Notifier.from_yaml(policy(emu), clock=fake_clock, store="memory://") as notifier:
        inbox.notifier = notifier
        link = notifier.link("max", "anna")
        assert await emu.event("open_link", USER, link=link, delay=30) == []
        await fake_clock.advance(29)
        early = await notifier.addresses("anna")
        await fake_clock.advance(1)
        await fake_clock.settle()
        late = await notifier.addresses("anna")
        hooks = await emu.event("bot_stopped", USER, duplicate=True)
    assert early == {} and late == {"max": USER}
    assert [h.delivered for h in hooks] == [True, True]
    assert [status for status, _ in inbox.answers] == [200, 200, 200]
