"""The error contract: what the library raises at a user's call is a CascadeError that
says what is wrong and where (issue 13, item 2). Store-backed cases run on every store
in tests/stores/test_send_checks.py."""

from __future__ import annotations

from typing import Any

import pytest

from cascade_notify import (
    CascadeError,
    Message,
    MessageError,
    Notifier,
    NotRunning,
    Recipient,
    RecipientError,
    SyncNotifier,
    UnknownPolicy,
)

POLICY = """
providers:
  sms: {type: fake, channel: sms}
policies:
  service:
    steps:
      - {channel: sms, providers: [sms]}
"""
ANNA = Recipient(id="anna", sms="+79161234567")
HI = Message(text="hi")


@pytest.mark.parametrize(
    "verb",
    [
        lambda n: n.send(ANNA, HI),
        lambda n: n.get("d1"),
        lambda n: n.wait("d1"),
        lambda n: n.cancel("d1"),
        lambda n: n.record_receipts([]),
        lambda n: n.addresses("anna"),
        lambda n: n.forget("anna"),
    ],
    ids=["send", "get", "wait", "cancel", "record_receipts", "addresses", "forget"],
)
async def test_a_verb_on_a_notifier_not_started(verb: Any) -> None:
    """Every verb that needs a running notifier raises NotRunning, saying how to run it."""
    notifier = Notifier.from_yaml(POLICY, store="memory://")
    with pytest.raises(NotRunning, match="use `async with notifier:`"):
        await verb(notifier)


def test_a_sync_verb_outside_with() -> None:
    """The synchronous facade's verbs raise NotRunning too (a CascadeError, and still the
    RuntimeError it was)."""
    notifier = SyncNotifier.from_yaml(POLICY, store="memory://")
    for verb in (
        lambda: notifier.send(ANNA, HI),
        lambda: notifier.get("d1"),
        notifier.breakers.list,
    ):
        with pytest.raises(NotRunning, match="use `with notifier:`") as caught:
            verb()
        assert isinstance(caught.value, CascadeError) and isinstance(caught.value, RuntimeError)


async def test_a_fake_pushing_before_start_is_not_running() -> None:
    """A provider's push with no running notifier to take it is NotRunning, naming it."""
    notifier = Notifier.from_yaml(POLICY, store="memory://")
    with pytest.raises(NotRunning, match="provider 'sms' is not attached"):
        await notifier.providers["sms"].emit([])


@pytest.mark.parametrize(
    ("fields", "field", "hint"),
    [
        ({"id": "a", "phone": "+79161234567"}, "phone", "is not a Recipient field"),
        ({"id": "a", "emial": "a@example.com"}, "emial", "did you mean 'email'?"),
        ({"sms": "+79161234567"}, "id", "is required"),
    ],
)
def test_an_unknown_or_missing_recipient_field_is_named(
    fields: dict[str, str], field: str, hint: str
) -> None:
    """Recipient(...) and Recipient.from_dict(...) name an unknown or missing field (and
    the fields there are) in a RecipientError, not a bare TypeError."""
    for build in (lambda: Recipient(**fields), lambda: Recipient.from_dict(fields)):
        with pytest.raises(RecipientError, match=hint) as caught:
            build()
        assert caught.value.field == field
        assert str(caught.value).startswith(f"Recipient.{field}: ")


def test_positional_recipient_arguments_are_refused_by_name() -> None:
    """Recipient("anna") says fields are keywords."""
    with pytest.raises(
        RecipientError, match=r"keyword arguments only, e\.g\. Recipient\(id=\.\.\.\)"
    ):
        Recipient("anna")  # type: ignore[misc]


def test_an_unknown_message_field_is_named() -> None:
    """Message(txt=...) is a MessageError naming the field and suggesting the right one."""
    with pytest.raises(MessageError, match=r"Message\.txt: .*did you mean 'text'\?") as caught:
        Message(txt="hi")  # type: ignore[call-arg]
    assert caught.value.field == "txt"


async def test_send_takes_a_recipient_and_a_message() -> None:
    """Anything else is a RecipientError or MessageError saying what to build."""
    async with Notifier.from_yaml(POLICY, store="memory://") as notifier:
        with pytest.raises(RecipientError, match="takes a Recipient, not dict"):
            await notifier.send({"id": "anna"}, HI)  # type: ignore[arg-type]
        with pytest.raises(MessageError, match="takes a Message, not str"):
            await notifier.send(ANNA, "hi")  # type: ignore[arg-type]


async def test_unknown_policy_names_the_known_ones() -> None:
    """UnknownPolicy names the policy asked for and the ones there are; also a KeyError."""
    async with Notifier.from_yaml(POLICY, store="memory://") as notifier:
        with pytest.raises(UnknownPolicy, match="'vip'; this notifier has: service") as caught:
            await notifier.send(ANNA, HI, policy="vip")
        assert isinstance(caught.value, KeyError)
        assert (caught.value.name, caught.value.known) == ("vip", ["service"])
        with pytest.raises(UnknownPolicy):
            notifier.policy("vip")
