"""A fake declares the receipts its channel's real providers give, so `validate` refuses
a `wait_for` production would never meet (issue 13, item 5); `receipts:` overrides it."""

from __future__ import annotations

import pytest

from cascade_notify import AttemptStatus, Message, Notifier, PolicyError, Recipient
from cascade_notify.policy import load_config
from cascade_notify.providers.fake import FakeProvider
from cascade_notify.testing import FakeClock, run_until_final


def policy(channel: str, wait_for: str, extra: str = "") -> str:
    return (
        f"providers:\n  p: {{type: fake, channel: {channel}{extra}}}\n"
        f"policies:\n  s: {{steps: [{{channel: {channel}, providers: [p], "
        f"wait_for: {wait_for}}}]}}\n"
    )


@pytest.mark.parametrize(
    ("channel", "refused", "met"),
    [
        ("telegram", ["delivered", "read"], ["accepted"]),
        ("max", ["delivered", "read"], ["accepted"]),
        ("email", ["delivered", "read"], ["accepted"]),
        ("sms", ["read"], ["accepted", "delivered"]),
        ("vk", ["delivered"], ["accepted", "read"]),
        ("whatsapp", [], ["accepted", "delivered", "read"]),
        ("viber", [], ["accepted", "delivered", "read"]),
        ("app", [], ["accepted", "delivered", "read"]),
    ],
)
def test_a_fake_reports_what_its_channel_does(
    channel: str, refused: list[str], met: list[str]
) -> None:
    """Per channel, the wait_for a fake can meet is the one its real providers can."""
    for wait_for in met:
        load_config(policy(channel, wait_for))
    for wait_for in refused:
        with pytest.raises(
            PolicyError, match=r"policies\.s\.steps\[0\]\.wait_for: .*cannot report"
        ):
            load_config(policy(channel, wait_for))


def test_receipts_setting_overrides_the_channel_default() -> None:
    """`receipts: [delivered]` lets a fake Telegram report delivery; `receipts: [accepted]`
    makes a fake WhatsApp report nothing after the send."""
    load_config(policy("telegram", "delivered", ", receipts: [delivered]"))
    with pytest.raises(PolicyError, match="cannot report delivery receipts"):
        load_config(policy("whatsapp", "delivered", ", receipts: [accepted]"))
    with pytest.raises(PolicyError, match="receipts"):
        load_config(policy("sms", "accepted", ", receipts: [seen]"))


async def test_a_fake_sends_only_the_receipts_it_declares() -> None:
    """A fake Telegram told to `read` still reports nothing (the Bot API cannot); a fake
    SMS reports `delivered` but no `read`."""
    clock = FakeClock(1_767_225_600.0)
    text = (
        "providers:\n"
        "  tg: {type: fake, channel: telegram, behavior: read}\n"
        "  sms: {type: fake, channel: sms, behavior: read}\n"
        "policies:\n"
        "  s: {steps: [{channel: telegram, providers: [tg], wait_for: accepted}]}\n"
        "  t: {steps: [{channel: sms, providers: [sms], wait_for: delivered}]}\n"
        "default_policy: s\n"
    )
    async with Notifier.from_yaml(text, clock=clock, store="memory://") as notifier:
        anna = Recipient(id="anna", telegram="100", sms="+79161234567")
        one = await notifier.send(anna, Message(text="hi"))
        two = await notifier.send(anna, Message(text="hi"), policy="t")
        done = {d.id: d for d in await run_until_final(notifier, clock, [one.id, two.id])}
        (tg,) = done[one.id].attempts
        assert (tg.status, tg.receipts) == (AttemptStatus.ACCEPTED, [])
        (sms,) = done[two.id].attempts
        assert sms.status is AttemptStatus.DELIVERED
        assert [r.status.value for r in sms.receipts] == ["delivered"]
        assert isinstance(notifier.providers["tg"], FakeProvider)
