"""The shared signing module agrees with the reference Standard Webhooks package."""

from __future__ import annotations

import base64
import time

import pytest
import standardwebhooks

from cascade_notify.providers._signing import (
    BadSignature,
    StandardWebhooks,
    decode_whsec,
    hmac_b64,
    hmac_hex,
    same,
)

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"o" * 32).decode()
BODY = b'{"message_id":"m1","status":"delivered"}'


def test_our_signature_verifies_with_the_reference() -> None:
    """Headers we sign with wall time pass the reference verifier."""
    headers = StandardWebhooks.from_secrets([SECRET]).sign("msg_1", BODY)
    standardwebhooks.Webhook(SECRET).verify(BODY, headers)


def test_reference_signature_verifies_with_ours() -> None:
    """A body the reference package signs is accepted, and its id returned."""
    stamp = int(time.time())
    signature = standardwebhooks.Webhook(SECRET).sign("msg_2", _dt(stamp), BODY.decode())
    headers = {
        "webhook-id": "msg_2",
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature,
    }
    assert StandardWebhooks.from_secrets([SECRET]).verify(headers, BODY) == "msg_2"


def test_repeated_signature_headers_joined_verify_with_valid_first() -> None:
    """Two webhook-signature headers joined by a comma still verify (valid one first)."""
    ours = StandardWebhooks.from_secrets([SECRET])
    headers = ours.sign("msg_3", BODY)
    other = StandardWebhooks.from_secrets([OTHER]).signature(
        "msg_3", int(headers["webhook-timestamp"]), BODY
    )
    for joined in (
        f"{headers['webhook-signature']}, {other}",
        f"{other}, {headers['webhook-signature']}",
    ):
        assert ours.verify({**headers, "webhook-signature": joined}, BODY) == "msg_3"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook-id": ""}, "no webhook-id"),
        ({"webhook-timestamp": "12ab"}, "not Unix seconds"),
        ({"webhook-timestamp": "1000"}, "old"),
        ({"webhook-signature": ""}, "no webhook-signature"),
        ({"webhook-signature": "v1,AAAA"}, "no v1 signature matches"),
    ],
)
def test_a_bad_signature_says_why(change: dict[str, str], reason: str) -> None:
    """Each refusal carries its reason."""
    ours = StandardWebhooks.from_secrets([SECRET])
    headers = {**ours.sign("msg_4", BODY), **change}
    with pytest.raises(BadSignature, match=reason):
        ours.verify(headers, BODY)


def test_timestamps_are_wall_time_not_a_given_now() -> None:
    """The tolerance is checked against wall time unless `now` is given."""
    ours = StandardWebhooks.from_secrets([SECRET])
    headers = ours.sign("msg_5", BODY, timestamp=1_000)
    with pytest.raises(BadSignature):
        ours.verify(headers, BODY)
    assert ours.verify(headers, BODY, now=1_100) == "msg_5"


def test_hmac_helpers_match_known_vectors() -> None:
    """hex and base64 HMACs, SHA-256 and SHA-1, and the constant-time compare."""
    # RFC 4231 test case 2
    assert hmac_hex(b"Jefe", b"what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    assert hmac_b64(b"key", b"The quick brown fox jumps over the lazy dog", "sha1") == (
        "3nybhbi3iqa8ino29wqQcBydtNk="
    )
    assert same("abc", "abc") and not same("abc", "abd") and not same("\ud800", "x")


def test_decode_whsec_refuses_without_echoing() -> None:
    """A malformed secret is refused; the message never repeats it."""
    with pytest.raises(ValueError, match="whsec_") as caught:
        decode_whsec("topsecretvalue")
    assert "topsecretvalue" not in str(caught.value)


def _dt(stamp: int):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(stamp, UTC)
