"""Link tokens (`cascade_notify.linking`) and `Notifier.link()`: what a deep link carries,
what fits, and what a forged or expired one is."""

from __future__ import annotations

import base64
import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cascade_notify import Notifier
from cascade_notify.errors import PolicyError
from cascade_notify.linking import LinkError, Refused, issue, payload_bytes, verify

KEY = b"k" * 32
OLD = b"o" * 32
NOW = 1_767_225_600.0
SECRET = "linking-test-secret-0123456789abcdef"

POLICY = f"""
links: {{secret: ["{SECRET}", "an-older-secret-still-checked-0123456"], ttl: 1d}}
providers:
  tg: {{type: telegram_bot, token: "123:abc", username: acme_notify_bot}}
  tg_nameless: {{type: telegram_bot, token: "124:abc"}}
  mx: {{type: max_bot, token: t, username: acme_bot}}
  vb: {{type: viber_bot, auth_token: t, sender_name: Acme, uri: acmedelivery}}
  vk: {{type: vk_community, access_token: t, group_id: 200000001, confirmation_code: c,
        secret: s}}
  sms: {{type: fake, channel: sms}}
policies:
  service:
    steps:
      - {{channel: telegram, providers: [tg], wait_for: accepted}}
      - {{channel: sms, providers: [sms]}}
"""


def test_a_token_round_trips_within_the_telegram_alphabet_and_limit() -> None:
    """A token is at most 64 characters of A-Z a-z 0-9 _ - and gives back its recipient."""
    token = issue(KEY, channel="telegram", recipient_id="anna", expires_ts=NOW + 60, limit=64)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token)
    claim = verify((KEY,), channel="telegram", payload=token, now=NOW)
    assert (claim.recipient_id, claim.expires_ts) == ("anna", NOW + 60)


@given(
    st.one_of(
        st.text(min_size=1, max_size=26).filter(lambda t: len(t.encode()) <= 26),
        st.integers(min_value=0, max_value=10**62 - 1).map(str),
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        st.binary(min_size=1, max_size=26).map(bytes.hex),
    )
)
def test_every_id_that_fits_comes_back_exactly(recipient_id: str) -> None:
    """Any id of up to 26 UTF-8 bytes, a number of up to 62 digits, a UUID (either case)
    or lower-case hex of up to 52 digits fits a 64-character payload, and comes back as
    it went in."""
    token = issue(KEY, channel="telegram", recipient_id=recipient_id, expires_ts=NOW + 1, limit=64)
    assert len(token) <= 64
    assert verify((KEY,), channel="telegram", payload=token, now=NOW).recipient_id == recipient_id


def test_a_long_id_is_a_link_error_saying_what_fits() -> None:
    """27 bytes do not fit Telegram's 64 characters: the error says the limit; MAX's 128
    characters take 74."""
    assert payload_bytes(64) == 26 and payload_bytes(128) == 74
    with pytest.raises(LinkError, match="holds at most 26"):
        issue(KEY, channel="telegram", recipient_id="x" * 27, expires_ts=NOW, limit=64)
    token = issue(KEY, channel="max", recipient_id="x" * 74, expires_ts=NOW + 1, limit=128)
    assert len(token) <= 128
    with pytest.raises(LinkError, match="holds at most 74"):
        issue(KEY, channel="max", recipient_id="x" * 75, expires_ts=NOW, limit=128)
    with pytest.raises(LinkError, match="non-empty"):
        issue(KEY, channel="max", recipient_id="", expires_ts=NOW, limit=128)


def test_a_uuid_id_fits_telegram_in_its_compact_form() -> None:
    """A UUID (36 characters) travels as its 16 bytes."""
    rid = str(uuid.uuid4())
    token = issue(KEY, channel="telegram", recipient_id=rid, expires_ts=NOW + 1, limit=64)
    assert len(token) == 51


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the mac
        lambda t: t[:12] + ("A" if t[12] != "A" else "B") + t[13:],  # the nonce or id
        lambda t: t + "A",
        lambda t: t[:-3],
        lambda t: "",
        lambda t: "anna",  # a bare recipient id, as older versions took
        lambda t: t.replace("-", "+").replace("_", "/") + "!",
    ],
)
def test_a_changed_token_is_forged(tamper: object) -> None:
    """Any change to a token, or something that is not one, is refused as forged."""
    token = issue(KEY, channel="telegram", recipient_id="anna", expires_ts=NOW + 60, limit=64)
    changed = tamper(token)  # type: ignore[operator]
    with pytest.raises(Refused) as refused:
        verify((KEY,), channel="telegram", payload=changed, now=NOW)
    assert refused.value.reason == "forged"


def test_a_token_with_the_unused_bits_of_its_last_character_changed_is_forged() -> None:
    """base64 decodes such a token to the same bytes; it is still not the token issued
    (this made the tampering test above pass or fail by the token's random nonce)."""
    for index in range(64):
        who = "r" * (index % 8 + 1)
        token = issue(KEY, channel="telegram", recipient_id=who, expires_ts=NOW + 60, limit=64)
        bits = {2: 4, 3: 2}.get(len(token) % 4, 0)  # low bits the last character wastes
        if not bits:
            continue
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        value = alphabet.index(token[-1])
        same_bytes = alphabet[value ^ 1]  # the lowest, unused bit flipped
        with pytest.raises(Refused, match="as issued"):
            verify((KEY,), channel="telegram", payload=token[:-1] + same_bytes, now=NOW)
        return
    pytest.fail("no token length with unused bits in 64 tries")


def test_another_key_or_another_channel_is_forged_and_a_rotated_key_still_verifies() -> None:
    """The mac covers the key and the channel; any of several keys verifies (rotation)."""
    token = issue(OLD, channel="telegram", recipient_id="anna", expires_ts=NOW + 60, limit=64)
    for keys, channel in [((KEY,), "telegram"), ((OLD,), "max")]:
        with pytest.raises(Refused, match="signature"):
            verify(keys, channel=channel, payload=token, now=NOW)
    assert verify((KEY, OLD), channel="telegram", payload=token, now=NOW).recipient_id == "anna"


def test_an_expired_token_is_refused_as_expired() -> None:
    """At its expiry second and after, a token links nothing."""
    token = issue(KEY, channel="telegram", recipient_id="anna", expires_ts=NOW + 60, limit=64)
    verify((KEY,), channel="telegram", payload=token, now=NOW + 59)
    with pytest.raises(Refused) as refused:
        verify((KEY,), channel="telegram", payload=token, now=NOW + 60)
    assert refused.value.reason == "expired"


def test_the_token_layout_is_as_documented() -> None:
    """Head byte (version 1, packing), four bytes of expiry, five of nonce, the id, and
    twelve of mac."""
    token = issue(
        KEY, channel="telegram", recipient_id="anna", expires_ts=NOW + 60, limit=64, nonce=b"\0" * 5
    )
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert raw[0] == 0x10 and int.from_bytes(raw[1:5]) == int(NOW + 60)
    assert raw[5:10] == b"\0" * 5 and raw[10:-12] == b"anna" and len(raw) == 26


# -- Notifier.link -----------------------------------------------------------------------


def test_each_bot_gets_its_own_link_format() -> None:
    """Telegram t.me ?start=, MAX max.ru ?start=, Viber viber://pa ?context=, VK vk.me ?ref=;
    each carries a token that verifies for that channel and names the recipient."""
    notifier = Notifier.from_yaml(POLICY, store="memory://")
    formats = {
        "telegram": r"https://t\.me/acme_notify_bot\?start=([A-Za-z0-9_-]{1,64})",
        "max": r"https://max\.ru/acme_bot\?start=([A-Za-z0-9_-]{1,128})",
        "viber": r"viber://pa\?chatURI=acmedelivery&context=([A-Za-z0-9_-]{1,64})",
        "vk": r"https://vk\.me/club200000001\?ref=([A-Za-z0-9_-]{1,64})",
    }
    keys = (SECRET.encode(),)
    for channel, pattern in formats.items():
        link = notifier.link(channel, "anna")
        found = re.fullmatch(pattern, link)
        assert found, link
        claim = verify(keys, channel=channel, payload=found[1], now=notifier.clock.now())
        assert claim.recipient_id == "anna"
        assert claim.expires_ts == pytest.approx(notifier.clock.now() + 86400, abs=1)


def test_link_errors_say_what_is_missing() -> None:
    """No provider that links on the channel, a provider that is not one, a bot whose
    username is unknown, an id too long, a bad ttl: each a LinkError saying so."""
    notifier = Notifier.from_yaml(POLICY, store="memory://")
    cases = [
        (lambda: notifier.link("sms", "anna"), "no provider on channel 'sms' makes deep links"),
        (lambda: notifier.link("telegram", "anna", provider="mx"), "not a provider on"),
        (
            lambda: notifier.link("telegram", "anna", provider="tg_nameless"),
            "set `username:`",
        ),
        (lambda: notifier.link("telegram", "x" * 40), "holds at most 26"),
        (lambda: notifier.link("telegram", "anna", ttl=0), "ttl must be"),
    ]
    for call, message in cases:
        with pytest.raises(LinkError, match=re.escape(message)):
            call()
    assert notifier.link("telegram", "anna", provider="tg").startswith("https://t.me/")


def test_without_a_links_section_no_link_is_made() -> None:
    """A policy without `links:` makes no links, and says what to add."""
    plain = POLICY.split("\n", 2)[2]
    with pytest.raises(LinkError, match="no `links:` section"):
        Notifier.from_yaml(plain, store="memory://").link("telegram", "anna")


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ('{secret: "short"}', "at least 32 characters"),
        (f'{{secret: "{SECRET}", ttl: 400d}}', "links.ttl: must be at most"),
        ("{ttl: 1d}", "secret"),
    ],
)
def test_a_bad_links_section_is_a_policy_error(links: str, message: str) -> None:
    """A short secret, a ttl over 366 days, no secret: refused at load."""
    text = f"links: {links}\n" + POLICY.split("\n", 2)[2]
    with pytest.raises(PolicyError, match=message):
        Notifier.from_yaml(text, store="memory://")


def test_the_sync_facade_links_reads_and_forgets() -> None:
    """SyncNotifier: `link()` as the async one makes it; a link taken in through the sync
    door shows in `addresses()`, and `forget()` erases it."""
    from cascade_notify.models import Signal, SignalKind
    from cascade_notify.providers.base import Inbound
    from cascade_notify.sync import SyncNotifier

    text = f"""
links: {{secret: "{SECRET}"}}
providers:
  mx: {{type: max_bot, token: t, username: acme_bot}}
policies:
  service: {{steps: [{{channel: max, providers: [mx], wait_for: accepted}}]}}
"""
    with SyncNotifier.from_yaml(text, store="memory://", worker=False) as notifier:
        link = notifier.link("max", "anna")
        token = link.rpartition("start=")[2]
        opened = Signal(
            kind=SignalKind.LINKED,
            channel="max",
            address="123",
            provider="mx",
            reason="start",
            ts=notifier.notifier.clock.now(),
            token=token,
        )
        notifier._call(notifier.notifier.take_in, Inbound(signals=[opened]))
        assert notifier.addresses("anna") == {"max": "123"}
        assert notifier.forget("anna") == 1
        assert notifier.addresses("anna") == {}
