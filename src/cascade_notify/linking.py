"""Link tokens: what a bot's deep link carries so that the customer who opens it is
linked to the right recipient, and nobody else can be.

A token is `base64url(head | expiry | nonce | recipient id | mac)`, without padding,
so it is made of `A-Z a-z 0-9 _ -` only (what Telegram's `start` parameter takes):

- `head`, one byte: the format version (high four bits, 1) and how the recipient id
  is packed (low four bits): as UTF-8, as a decimal number, as a UUID (lower or upper
  case), or as lower-case hex; the packing that gives the fewest bytes is chosen, and
  unpacking gives back exactly the id that was packed;
- `expiry`: four bytes, Unix seconds (big-endian) after which the token links nothing;
- `nonce`: five random bytes, so two links for one recipient are two tokens;
- `mac`: the first twelve bytes of HMAC-SHA256 under the `links.secret`, over the
  channel's name and everything before it: a token made for Telegram does not link
  on MAX, and none can be made or changed without the secret.

That is 22 bytes besides the id, so a 64-character payload (Telegram, and what we use
for Viber and VK) holds 26 bytes of id: any id of up to 26 UTF-8 bytes, a decimal
number of up to 62 digits, a UUID, or lower-case hex of up to 52 digits; MAX's 128
characters hold 74 bytes. A longer id is a `LinkError` saying so.

Whether a token was used before is the store's business (it keeps a digest of each
token that linked); this module only makes and checks them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
import uuid
from dataclasses import dataclass
from typing import Final

from cascade_notify.errors import CascadeError

VERSION: Final = 1
MAC_BYTES: Final = 12
NONCE_BYTES: Final = 5
#: What a token holds besides the recipient id, in bytes.
OVERHEAD: Final = 1 + 4 + NONCE_BYTES + MAC_BYTES
_UTF8, _DECIMAL, _UUID_LOWER, _UUID_UPPER, _HEX = range(5)
_ALPHABET: Final = re.compile(r"[A-Za-z0-9_-]+")
_DIGITS: Final = re.compile(r"[1-9][0-9]*|0")
_HEXDIGITS: Final = re.compile(r"(?:[0-9a-f]{2})+")
_DOMAIN: Final = b"cascade_notify link\x00"


class LinkError(CascadeError):
    """A link cannot be made: no `links:` secret, no provider on the channel that links,
    or a recipient id too long for the channel's payload."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What a verified token says: whose link it is, and until when it links."""

    recipient_id: str
    expires_ts: float


class Refused(Exception):
    """A payload that links nothing: `reason` is `forged` (it is not ours, or was changed)
    or `expired`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def payload_bytes(limit: int) -> int:
    """How many bytes of packed recipient id a payload of `limit` characters holds."""
    return limit * 6 // 8 - OVERHEAD


def _pack(recipient_id: str) -> tuple[int, bytes]:
    choices = [(_UTF8, recipient_id.encode())]
    if _DIGITS.fullmatch(recipient_id):
        number = int(recipient_id)
        choices.append((_DECIMAL, number.to_bytes(max(1, (number.bit_length() + 7) // 8))))
    if len(recipient_id) == 36:
        try:
            parsed = uuid.UUID(recipient_id)
        except ValueError:
            parsed = None
        if parsed is not None and str(parsed) == recipient_id:
            choices.append((_UUID_LOWER, parsed.bytes))
        elif parsed is not None and str(parsed).upper() == recipient_id:
            choices.append((_UUID_UPPER, parsed.bytes))
    if _HEXDIGITS.fullmatch(recipient_id):
        choices.append((_HEX, bytes.fromhex(recipient_id)))
    return min(choices, key=lambda choice: len(choice[1]))


def _unpack(kind: int, packed: bytes) -> str:
    if kind == _UTF8:
        return packed.decode()
    if kind == _DECIMAL:
        return str(int.from_bytes(packed))
    if kind in (_UUID_LOWER, _UUID_UPPER):
        text = str(uuid.UUID(bytes=packed))
        return text if kind == _UUID_LOWER else text.upper()
    if kind == _HEX:
        return packed.hex()
    raise ValueError(f"unknown id packing {kind}")


def _mac(key: bytes, channel: str, body: bytes) -> bytes:
    message = _DOMAIN + channel.encode() + b"\x00" + body
    return hmac.new(key, message, hashlib.sha256).digest()[:MAC_BYTES]


def issue(
    key: bytes,
    *,
    channel: str,
    recipient_id: str,
    expires_ts: float,
    limit: int,
    nonce: bytes | None = None,
) -> str:
    """A token for `recipient_id` on `channel`, linking until `expires_ts`, of at most
    `limit` characters; `LinkError` if the id does not fit."""
    if not isinstance(recipient_id, str) or not recipient_id:
        raise LinkError("a link needs a recipient id: a non-empty string")
    kind, packed = _pack(recipient_id)
    room = payload_bytes(limit)
    if len(packed) > room:
        raise LinkError(
            f"recipient id {recipient_id[:40]!r} takes {len(packed)} bytes in a link; a "
            f"{channel} link holds at most {room} (up to {room} UTF-8 bytes, a number of up "
            f"to {len(str(2 ** (8 * room) - 1)) - 1} digits, a UUID or lower-case hex of up "
            f"to {2 * room} digits): link by a shorter id"
        )
    expiry = int(expires_ts)
    if not 0 < expiry < 2**32:
        raise LinkError(f"a link cannot expire at {expires_ts!r}")
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    body = bytes([VERSION << 4 | kind]) + struct.pack(">I", expiry) + nonce + packed
    token = base64.urlsafe_b64encode(body + _mac(key, channel, body)).rstrip(b"=").decode()
    assert len(token) <= limit
    return token


def verify(keys: tuple[bytes, ...], *, channel: str, payload: str, now: float) -> Claim:
    """The claim of a payload a customer arrived with; `Refused` if it is not a token made
    under one of `keys` for `channel`, or if it has expired."""
    if not _ALPHABET.fullmatch(payload) or len(payload) % 4 == 1:
        raise Refused("forged", "the payload is not a link token")
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        raise Refused("forged", "the payload is not a link token") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != payload:
        # base64 ignores the unused low bits of the last character: a token with them
        # changed decodes to the same bytes, but it is not the token that was issued
        raise Refused("forged", "the payload is not a link token as issued")
    if len(raw) < OVERHEAD + 1 or raw[0] >> 4 != VERSION:
        raise Refused("forged", "the payload is not a link token of this version")
    body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not any(hmac.compare_digest(mac, _mac(key, channel, body)) for key in keys):
        raise Refused("forged", f"the token's signature does not match (for {channel})")
    (expiry,) = struct.unpack(">I", body[1:5])
    try:
        recipient_id = _unpack(body[0] & 0x0F, body[5 + NONCE_BYTES :])
    except ValueError:
        raise Refused("forged", "the token's recipient id does not unpack") from None
    if now >= expiry:
        raise Refused("expired", f"the link expired {now - expiry:.0f} s ago")
    return Claim(recipient_id, float(expiry))


__all__ = ["Claim", "LinkError", "Refused", "issue", "payload_bytes", "verify"]
