"""Webhook signatures, both ways: the one implementation providers verify with and the
emulators sign with.

- HMAC over bytes, as hex or base64 (`hmac_hex`, `hmac_b64`; SHA-256 or SHA-1), and a
  constant-time `same()` for comparing what came in with what we computed.
- Standard Webhooks (`whsec_` secrets; `webhook-id`, `webhook-timestamp`,
  `webhook-signature: v1,<base64>` headers): `StandardWebhooks.sign()` and `.verify()`.

Signature timestamps, and the tolerance they are checked against, are wall-clock time
(`time.time()`), never a notifier's injected clock: a test on `FakeClock` must still
interoperate with real verifiers and emulators (design.md).

A verification that fails raises `BadSignature` with the reason, which the receipts
endpoint logs; the reason never repeats a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from typing import Final, Literal

Digest = Literal["sha256", "sha1"]

WHSEC_PREFIX: Final = "whsec_"
_MIN_KEY_BYTES: Final = 24  # the Standard Webhooks spec asks for 24 to 64 random bytes
_MAX_ID: Final = 256
_MAX_SIGNATURES: Final = 16
_TIMESTAMP: Final = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() also takes "١٢"
#: How far a Standard Webhooks timestamp may be from wall-clock time, in seconds.
DEFAULT_TOLERANCE: Final = 300.0


class BadSignature(ValueError):
    """A webhook's signature does not verify; `reason` says why (never a secret)."""

    def __init__(self, reason: str, *, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        #: The HTTP status to answer: 401, or 403 where the provider's docs ask for it.
        self.status = status


def wall_time() -> float:
    """Wall-clock seconds: what signature timestamps are made and checked with."""
    return time.time()


def hmac_digest(key: bytes, data: bytes, digest: Digest = "sha256") -> bytes:
    return hmac.new(key, data, getattr(hashlib, digest)).digest()


def hmac_hex(key: bytes, data: bytes, digest: Digest = "sha256") -> str:
    """Lower-case hex HMAC of `data` (WhatsApp, Viber)."""
    return hmac_digest(key, data, digest).hex()


def hmac_b64(key: bytes, data: bytes, digest: Digest = "sha256") -> str:
    """Base64 HMAC of `data` (Standard Webhooks with SHA-256, Twilio with SHA-1)."""
    return base64.b64encode(hmac_digest(key, data, digest)).decode("ascii")


def sha256_hex(data: bytes) -> str:
    """Plain SHA-256 hex digest (SMS.ru's callback hash)."""
    return hashlib.sha256(data).hexdigest()


def same(given: str | bytes, expected: str | bytes) -> bool:
    """Constant-time equality; text is compared as UTF-8, and never raises on odd input."""
    return hmac.compare_digest(_bytes(given), _bytes(expected))


def _bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8", "surrogatepass")


def header_bytes(value: str) -> bytes:
    """A header value as the bytes that were on the wire.

    ASGI servers hand header bytes over as latin-1 text; a framework that decoded them
    as UTF-8 gives text latin-1 cannot hold, which was UTF-8 on the wire (surrogatepass:
    hostile text with lone surrogates fails to verify, never raises).
    """
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def decode_whsec(value: str) -> bytes:
    """The HMAC key in a `whsec_<base64>` secret; ValueError (never echoing it) if malformed."""
    if not value.startswith(WHSEC_PREFIX):
        raise ValueError("a webhook secret must be whsec_ followed by the key in base64")
    encoded = value[len(WHSEC_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("the part after whsec_ is not valid base64") from None
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(
            f"the key is {len(key)} bytes; Standard Webhooks asks for 24 to 64 random bytes"
        )
    return key


class StandardWebhooks:
    """Sign and verify the Standard Webhooks way with one or more keys (rotation).

    `sign()` gives one `v1,<base64>` per key, space-separated, so the receiver can
    rotate its secret without a gap; `verify()` accepts any one of them.
    """

    def __init__(self, keys: Sequence[bytes], *, tolerance: float = DEFAULT_TOLERANCE) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self.keys = tuple(keys)
        self.tolerance = tolerance

    @classmethod
    def from_secrets(
        cls, secrets: Sequence[str], *, tolerance: float = DEFAULT_TOLERANCE
    ) -> StandardWebhooks:
        return cls([decode_whsec(s) for s in secrets], tolerance=tolerance)

    @staticmethod
    def content(webhook_id: str, timestamp: str, body: bytes) -> bytes:
        """What is signed: `id.timestamp.body`."""
        return header_bytes(webhook_id) + b"." + timestamp.encode("ascii") + b"." + body

    def signature(self, webhook_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` value for `body`."""
        signed = self.content(webhook_id, str(timestamp), body)
        return " ".join("v1," + hmac_b64(key, signed) for key in self.keys)

    def sign(self, webhook_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The three headers for `body`, stamped with wall-clock time unless given."""
        stamp = int(wall_time()) if timestamp is None else timestamp
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": self.signature(webhook_id, stamp, body),
        }

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> str:
        """Check the headers (lower-case names) over the raw `body`; return the webhook id.

        Raises `BadSignature` with the reason. Repeated `webhook-signature` headers
        joined with commas (RFC 9110) are read as one list. `now` defaults to wall time.
        """
        webhook_id = headers.get("webhook-id", "")
        stamp = headers.get("webhook-timestamp", "")
        given = headers.get("webhook-signature", "")
        if not webhook_id:
            raise BadSignature("no webhook-id header")
        if len(webhook_id) > _MAX_ID:
            raise BadSignature(f"webhook-id is over {_MAX_ID} characters")
        if not _TIMESTAMP.fullmatch(stamp):
            raise BadSignature("webhook-timestamp is missing or not Unix seconds")
        skew = (wall_time() if now is None else now) - int(stamp)
        if abs(skew) > self.tolerance:
            side = "old" if skew > 0 else "far in the future"
            raise BadSignature(
                f"webhook-timestamp is {abs(skew):.0f} s {side} (tolerance {self.tolerance:.0f} s)"
            )
        if not given:
            raise BadSignature("no webhook-signature header")
        signed = self.content(webhook_id, stamp, body)
        expected = [hmac_digest(key, signed) for key in self.keys]
        for part in _signatures(given):
            version, _, encoded = part.partition(",")
            if version != "v1" or not encoded.isascii():
                continue
            try:
                candidate = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                continue
            if any(hmac.compare_digest(candidate, digest) for digest in expected):
                return webhook_id
        raise BadSignature("no v1 signature matches")


def _signatures(value: str) -> list[str]:
    # space-separated per the spec; a repeated header arrives joined by ", ", which
    # leaves a trailing comma on each signature but the last
    parts = [p.rstrip(",") for p in value.replace(", ", " ").split()]
    return [p for p in parts if p][:_MAX_SIGNATURES]


__all__ = [
    "DEFAULT_TOLERANCE",
    "WHSEC_PREFIX",
    "BadSignature",
    "StandardWebhooks",
    "decode_whsec",
    "header_bytes",
    "hmac_b64",
    "hmac_digest",
    "hmac_hex",
    "same",
    "sha256_hex",
    "wall_time",
]
