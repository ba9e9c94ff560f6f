"""`vk_community` against the VK emulator over loopback HTTP: the send and its
`random_id`, every error class of providers.md §3b.4, the Callback API handshake and
secret, `read` deciding a step, and a resend after an unknown outcome delivering once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cascade_notify import DeliveryStatus, Message, Notifier, PolicyError, Recipient
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.providers import registry
from cascade_notify.providers.base import SendRequest, WebhookRequest
from cascade_notify.providers.vk import RANDOM_ID_LIMIT, VkProvider, random_id
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import Entry, VkEmulator
from cascade_notify.testing.emulators.vk import ERRORS

from .conftest import Inbox, answered

PEER = "123456789"


@pytest.fixture
async def emu(fake_clock: FakeClock) -> AsyncIterator[VkEmulator]:
    async with VkEmulator(clock=fake_clock) as emulator:
        yield emulator


def provider(emu: VkEmulator, **settings: Any) -> VkProvider:
    values = {k: v for k, v in emu.settings().items() if k != "type"} | settings
    return VkProvider("vk", VkProvider.Settings.model_validate(values))


def request(attempt_id: str = "att-1", *, resend: bool = False) -> SendRequest:
    return SendRequest(
        attempt_id=attempt_id,
        delivery_id="del-1",
        channel="vk",
        address=PEER,
        recipient=Recipient(id="anna", addresses={"vk": PEER}),
        message=Message(text="Your parcel A-1234 has arrived."),
        resend=resend,
    )


async def test_send_is_accepted(emu: VkEmulator) -> None:
    """A form POST with the Bearer token, `v` and the attempt's `random_id`; the id is
    `peer:message_id`."""
    vk = provider(emu)
    try:
        result = await vk.send(request())
    finally:
        await vk.aclose()
    [sent] = emu.sent_to(PEER)
    [record] = emu.requests
    assert result.provider_message_id == f"{PEER}:{sent.data['message_id']}"
    assert record.path == "/method/messages.send"
    assert record.headers["authorization"] == f"Bearer {emu.access_token}"
    assert record.headers["content-type"] == "application/x-www-form-urlencoded"
    assert record.parsed["v"] == "5.199" and record.parsed["peer_id"] == PEER
    assert record.parsed["random_id"] == str(random_id(emu.group_id, "att-1"))


def test_random_id_is_stable_and_in_range() -> None:
    """Derived from the attempt id alone (per community), always 1 to 2**31-1."""
    ids = {random_id(200000001, f"att-{i}") for i in range(2000)}
    assert all(1 <= i <= RANDOM_ID_LIMIT for i in ids) and len(ids) == 2000
    assert random_id(1, "a") == random_id(1, "a") != random_id(2, "a")


def test_declared_capabilities() -> None:
    """A built-in with `read` receipts only, idempotent sends and signals."""
    cls = registry.get("vk_community")
    assert cls is VkProvider
    assert cls.idempotent_sends and cls.signals
    assert {r.value for r in cls.receipts} == {"read"}


def vk_policy(wait_for: str, api_url: str = "http://127.0.0.1:9", token: str = "t") -> str:  # noqa: S107
    return f"""
links: {{secret: "vk-test-link-secret-0123456789abcdef"}}
providers:
  vk: {{type: vk_community, access_token: "{token}", group_id: 200000001,
        confirmation_code: a1b2c3d4, secret: test-secret, api_url: "{api_url}"}}
  sms: {{type: fake, channel: sms}}
policies:
  service:
    steps:
      - {{channel: vk, providers: [vk], wait_for: {wait_for}, timeout: 10m}}
      - {{channel: sms, providers: [sms], wait_for: delivered}}
"""


def test_wait_for_delivered_is_a_policy_error_read_and_accepted_are_not() -> None:
    """VK never reports delivery: `delivered` fails at load even though `read` is known."""
    with pytest.raises(PolicyError, match="cannot report"):
        Notifier.from_yaml(vk_policy("delivered"), store="memory://")
    for fine in ("read", "accepted"):
        Notifier.from_yaml(vk_policy(fine), store="memory://")


def _expected(name: str) -> tuple[type[ProviderError], dict[str, Any]]:
    code = ERRORS[name].code
    if name in ("http_error", "not_json"):
        return TransientError, {}
    if code in (1, 6, 9, 10, 29):
        return TransientError, {"code": str(code)}
    if code in (5, 7, 15, 203, 27, 912, 985):
        return PermanentError, {"account": True, "code": str(code)}
    if code in (14, 100, 104, 911, 913, 914, 921, 940, 943):
        return PermanentError, {"account": False, "code": str(code)}
    if code == 901:
        return UnreachableError, {"gone": "not_allowed", "code": "901"}
    if code == 4242:  # no table lists it: fail safe, with the answer bounded
        return PermanentError, {"account": False, "code": "4242"}
    return UnreachableError, {"gone": None, "code": str(code)}


@pytest.mark.parametrize("name", sorted(ERRORS))
async def test_error_table(emu: VkEmulator, name: str) -> None:
    """Each VK error (HTTP 200, `error` envelope) is classified by `error_code`."""
    kind, fields = _expected(name)
    emu.script(PEER, name)
    vk = provider(emu)
    try:
        with pytest.raises(kind) as caught:
            await vk.send(request())
    finally:
        await vk.aclose()
    assert type(caught.value) is kind
    for field, value in fields.items():
        assert getattr(caught.value, field) == value, field
    assert len(str(caught.value)) < 700


async def test_retry_hints_and_a_wrong_token(emu: VkEmulator) -> None:
    """6 waits about a second, 9 longer; a wrong token is error 5, an account error."""
    vk, wrong = provider(emu), provider(emu, access_token="vk1.a.wrong")
    try:
        emu.script(PEER, ["rate_limited", "flood"])
        with pytest.raises(TransientError) as rate:
            await vk.send(request("a"))
        with pytest.raises(TransientError) as flood:
            await vk.send(request("b"))
        with pytest.raises(PermanentError) as bad:
            await wrong.send(request("c"))
    finally:
        await vk.aclose()
        await wrong.aclose()
    assert rate.value.retry_after == 1.0
    assert flood.value.retry_after is not None and flood.value.retry_after > 1.0
    assert bad.value.account and bad.value.code == "5"


async def test_resend_after_an_unknown_outcome_delivers_once(emu: VkEmulator) -> None:
    """The API took the message but hung up; the resend of the same attempt carries the
    same `random_id`, gets the same message id back, and nothing new is delivered."""
    emu.script(PEER, [{"do": "hang_up", "then": "deliver"}, "deliver"])
    vk = provider(emu)
    try:
        with pytest.raises(UnknownOutcomeError):
            await vk.send(request())
        again = await vk.send(request(resend=True))
        other = await vk.send(request("att-2"))
    finally:
        await vk.aclose()
    first, second = emu.sent_to(PEER)
    assert again.provider_message_id == f"{PEER}:{first.data['message_id']}"
    assert other.provider_message_id == f"{PEER}:{second.data['message_id']}"
    sent_ids = [r.parsed["random_id"] for r in emu.requests]
    assert sent_ids[0] == sent_ids[1] != sent_ids[2]
    assert [r.entry for r in emu.requests] == ["hang_up", "duplicate", "deliver"]


def policy(emu: VkEmulator, wait_for: str = "read") -> str:
    return vk_policy(wait_for, emu.api_url, emu.access_token)


async def test_read_decides_a_read_step(
    emu: VkEmulator, fake_clock: FakeClock, inbox: Inbox
) -> None:
    """`message_read` after the send, posted with the secret and answered `ok`, ends a
    `wait_for: read` step on VK; the SMS step is never used."""
    emu.webhook_url = f"{inbox.url}/vk"
    emu.script(PEER, {"do": "read", "read": 30})
    anna = Recipient(id="anna", addresses={"vk": PEER}, sms="+79161234567")
    async with Notifier.from_yaml(policy(emu), clock=fake_clock, store="memory://") as notifier:
        inbox.notifier = notifier
        delivery = await notifier.send(anna, Message(text="Parcel"))
        await answered(notifier, delivery.id)
        [done] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert done.status is DeliveryStatus.DELIVERED and done.channel == "vk"
    [hook] = [h for h in emu.webhooks if h.kind == "message_read"]
    assert hook.delivered and inbox.answers == [(200, b"ok")]
    assert all(a.channel == "vk" for a in done.attempts)


async def test_confirmation_handshake(emu: VkEmulator, fake_clock: FakeClock, inbox: Inbox) -> None:
    """The `confirmation` request is answered with the code, as plain text; one for
    another community, or with a wrong secret, is refused."""
    emu.webhook_url = f"{inbox.url}/vk"
    async with Notifier.from_yaml(policy(emu), clock=fake_clock, store="memory://") as notifier:
        inbox.notifier = notifier
        [hook] = await emu.event("confirmation", "*")
        other = await notifier.handle_webhook(
            "vk",
            method="POST",
            url="http://h/receipts/vk",
            headers={"content-type": "application/json"},
            body=b'{"type": "confirmation", "group_id": 1}',
        )
        forged = await notifier.handle_webhook(
            "vk",
            method="POST",
            url="http://h/receipts/vk",
            headers={},
            body=b'{"type": "confirmation", "group_id": 200000001, "secret": "nope"}',
        )
    assert emu.confirmed and hook.delivered
    assert inbox.answers == [(200, b"a1b2c3d4")]
    assert other.status == 403 and forged.status == 403


async def test_wrong_or_missing_secret_changes_nothing(
    emu: VkEmulator, fake_clock: FakeClock, inbox: Inbox
) -> None:
    """A `message_deny` with a wrong or no secret is 403 and the next send still goes to
    VK; the real one is answered `ok` and the next cascade skips VK for SMS."""
    emu.webhook_url = f"{inbox.url}/vk"
    anna = Recipient(id="anna", addresses={"vk": PEER}, sms="+79161234567")
    body = json.loads(emu._callback("message_deny", {"user_id": int(PEER)}, "e1"))
    async with Notifier.from_yaml(
        policy(emu, "accepted"), clock=fake_clock, store="memory://"
    ) as notifier:
        inbox.notifier = notifier
        answers = []
        unsigned = {k: v for k, v in body.items() if k != "secret"}
        for forged in ({**body, "secret": "wrong"}, unsigned):
            answers.append(
                await notifier.handle_webhook(
                    "vk",
                    method="POST",
                    url="http://h/receipts/vk",
                    headers={"content-type": "application/json"},
                    body=json.dumps(forged).encode(),
                )
            )
        first = await notifier.send(anna, Message(text="Still VK"))
        await answered(notifier, first.id)
        [still] = await run_until_final(notifier, fake_clock, [first.id])
        [deny] = await emu.event("message_deny", PEER, duplicate=False)
        second = await notifier.send(anna, Message(text="Now SMS"))
        [skipped] = await run_until_final(notifier, fake_clock, [second.id])
    assert [a.status for a in answers] == [403, 403]
    assert still.channel == "vk"
    assert deny.delivered and inbox.answers == [(200, b"ok")]
    assert [s.reason for s in skipped.skipped] == ["address_gone"] and skipped.channel == "sms"


async def test_allow_links_and_events_we_ignore_are_ok(
    emu: VkEmulator, fake_clock: FakeClock, inbox: Inbox
) -> None:
    """`message_allow` with the key of the recipient's link token links the address, and
    so does the `ref` of a vk.me deep link; `message_new`, a duplicated event and a
    delayed one are all answered `ok`."""
    emu.webhook_url = f"{inbox.url}/vk"
    async with Notifier.from_yaml(policy(emu), clock=fake_clock, store="memory://") as notifier:
        inbox.notifier = notifier
        key = notifier.link("vk", "anna").rpartition("ref=")[2]
        [allow] = await emu.event("message_allow", PEER, key=key)
        linked = await notifier.addresses("anna")
        link = notifier.link("vk", "boris")
        assert link.startswith("https://vk.me/club200000001?ref=")
        [opened] = await emu.event("open_link", "223456789", link=link)
        boris = await notifier.addresses("boris")
        hooks = await emu.event("message_new", PEER, duplicate=True)
        assert await emu.event("message_allow", PEER, delay=5) == []
        await fake_clock.advance(5)
        await fake_clock.settle()
    assert allow.delivered and linked == {"vk": PEER}
    assert opened.delivered and boris == {"vk": "223456789"}
    assert [h.delivered for h in hooks] == [True, True]
    assert inbox.answers == [(200, b"ok")] * 5


async def test_a_covering_read_marks_earlier_messages(emu: VkEmulator) -> None:
    """A `message_read` up to a later message also reads the earlier ones this process
    sent to that peer; one from the community itself (negative from_id) reads nothing."""
    vk = provider(emu)
    try:
        first = await vk.send(request("a"))
        second = await vk.send(request("b"))
        body = emu._receipt(emu.sent_to(PEER)[-1], "message_read", Entry("read"))
        inbound = await vk.receive(WebhookRequest("POST", "http://h/vk", {}, body))
        event = json.loads(body)
        event["object"]["from_id"] = -emu.group_id
        mine = await vk.receive(
            WebhookRequest("POST", "http://h/vk", {}, json.dumps(event).encode())
        )
    finally:
        await vk.aclose()
    ids = [r.provider_message_id for r in inbound.receipts]
    assert ids == [first.provider_message_id, second.provider_message_id]
    assert mine.receipts == [] and mine.answer is not None and mine.answer.body == b"ok"
