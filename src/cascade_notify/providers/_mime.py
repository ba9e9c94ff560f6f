"""E-mail as bytes, both ways, for the `smtp` provider: the MIME it writes (headers
encoded per RFC 2047, bodies 7-bit clean), and the RFC 3464 delivery-status reports it
reads back as `failed` receipts."""

from __future__ import annotations

import base64
import email.policy
import email.utils
import os
import re
import time
from collections.abc import Collection
from email.header import Header
from email.message import Message as MimePart
from email.parser import BytesHeaderParser, BytesParser
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

from cascade_notify.models import Receipt, ReceiptStatus

if TYPE_CHECKING:
    pass

Tls = Literal["starttls", "implicit", "none"]
#: How far one transaction got when it failed.
Phase = Literal["connect", "mail", "rcpt", "data"]

_LINES = re.compile(r"\r\n|\r|\n")
_REPLY = re.compile(r"\b([245]\d\d)\b")
_SUBJECT_LIMIT = 78


def _header(name: str, value: str, *, ascii_only: bool = False) -> bytes:
    """`Name: value` CRLF, RFC 2047 encoded and folded when needed; no line breaks in."""
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"{name} holds a line break")
    if value.isascii() and len(name) + len(value) <= 76:
        return f"{name}: {value}\r\n".encode()
    if ascii_only and not value.isascii():
        raise ValueError(f"{name} must be ASCII")
    charset = "us-ascii" if value.isascii() else "utf-8"
    folded = Header(value, charset, header_name=name).encode(linesep="\r\n")
    return f"{name}: {folded}\r\n".encode()


def _part(subtype: str, text: str) -> bytes:
    """One text part, canonical CRLF line ends; 7-bit as it is, or base64."""
    lines = _LINES.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    canonical = "\r\n".join(lines) + "\r\n"
    if canonical.isascii() and all(len(line) <= 998 for line in lines):
        encoding, body = "7bit", canonical.encode()
    else:
        encoding = "base64"
        body = base64.encodebytes(canonical.encode("utf-8", "surrogatepass"))
        body = body.replace(b"\n", b"\r\n")
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
    return (head + f"Content-Transfer-Encoding: {encoding}\r\n\r\n").encode() + body


def _body(text: str, html: str | None) -> bytes:
    """The MIME body after the top-level headers: text/plain, or multipart/alternative."""
    if not html:
        return _part("plain", text)
    boundary = "=_" + os.urandom(12).hex()  # cannot occur in base64, nor, by chance, in text
    mark = f"--{boundary}\r\n".encode()
    return (
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode()
        + mark
        + _part("plain", text)
        + mark
        + _part("html", html)
        + f"--{boundary}--\r\n".encode()
    )


def _subject_from(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= _SUBJECT_LIMIT else line[: _SUBJECT_LIMIT - 1].rstrip() + "…"


# the one translation of aiosmtplib's exceptions


def parse_bounce(
    raw: bytes, *, provider: str, domains: Collection[str] = (), now: float | None = None
) -> Receipt | None:
    """A `failed` receipt from an RFC 3464 delivery-status report about one of our messages.

    None when `raw` is not a `multipart/report; report-type=delivery-status` message, no
    recipient's `Action` is `failed` (`delayed` is still being retried), or the returned
    message's `Message-ID` is missing or not in one of `domains` (when given). The
    receipt's code is the recipient's `Status` (e.g. `5.1.1`), its error the
    `Diagnostic-Code`; `attempt_id` is read back from the Message-ID's local part.
    """
    report = BytesParser(policy=email.policy.default).parsebytes(raw)
    if report.get_content_type() != "multipart/report":
        return None
    if str(report.get_param("report-type", "")).lower() != "delivery-status":
        return None
    status: MimePart | None = None
    message_id: str | None = None
    for part in report.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status" and status is None:
            status = _failed_recipient(part)
        elif kind in ("message/rfc822", "text/rfc822-headers") and message_id is None:
            message_id = _returned_message_id(part)
    if status is None or message_id is None:
        return None
    local, _, domain = message_id.rpartition("@")
    if not local or (domains and domain.lower() not in {d.lower() for d in domains}):
        return None
    code = _field(status, "status")
    diagnostic = _field(status, "diagnostic-code")
    if diagnostic is not None:
        diagnostic = diagnostic.partition(";")[2].strip() or diagnostic
        if code is None and (reply := _REPLY.search(diagnostic)):
            code = reply.group(1)
    return Receipt(
        provider=provider,
        provider_message_id=message_id,
        status=ReceiptStatus.FAILED,
        ts=time.time() if now is None else now,
        code=code,
        error=diagnostic or f"bounced: {_field(status, 'final-recipient') or 'recipient'}",
        attempt_id=unquote(local),
    )


def _failed_recipient(part: MimePart) -> MimePart | None:
    # the email package parses message/delivery-status as a list of header blocks: the
    # per-message fields first, then one block per recipient
    blocks = part.get_payload()
    if not isinstance(blocks, list):
        return None
    for block in blocks[1:]:
        if isinstance(block, MimePart) and (_field(block, "action") or "").lower() == "failed":
            return block
    return None


def _returned_message_id(part: MimePart) -> str | None:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        original = inner[0] if isinstance(inner, list) and inner else None
    else:
        body = part.get_payload(decode=True)
        if not isinstance(body, bytes):
            return None
        original = BytesHeaderParser(policy=email.policy.default).parsebytes(body)
    if not isinstance(original, MimePart):
        return None
    value = original.get("message-id")
    if value is None:
        return None
    found = re.search(r"<([^<>\s]+@[^<>\s]+)>", str(value))
    return found.group(1) if found else None


def _field(block: MimePart, name: str) -> str | None:
    value = block.get(name)
    return str(value).strip() or None if value is not None else None
