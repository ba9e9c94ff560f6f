"""What emulators keep and answer with: recorded requests, accepted messages, webhooks
and their tries; the JSON the APIs write; how a body is read for the record."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from cascade_notify._logmask import mask_address


@dataclass
class RecordedRequest:
    """One request as it arrived. `at` is the emulator's clock; `entry` the scripted
    answer it got (None when a check refused it first); `status` None after a hang-up."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    parsed: Any
    at: float
    address: str | None = None
    entry: str | None = None
    status: int | None = None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def as_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("method", "path", "query", "headers", "at")}
        out.update(body=self.body.decode("utf-8", "replace"), parsed=_plain(self.parsed))
        out.update(address=self.address, entry=self.entry, status=self.status)
        return out


@dataclass
class Accepted:
    """A message the emulated API took: its id, to whom, its text, and provider data
    (for example WhatsApp's `biz_opaque_callback_data`)."""

    id: str
    address: str
    text: str | None
    request: RecordedRequest
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Attempt:
    at: float
    status: int | None
    error: str | None = None


@dataclass
class Webhook:
    """One webhook the emulator sent (or would send, without a `url`), with every try."""

    kind: str
    url: str | None
    body: bytes
    headers: dict[str, str]
    at: float
    message_id: str | None = None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return any(a.status is not None and 200 <= a.status < 300 for a in self.attempts)

    def json(self) -> Any:
        return json.loads(self.body)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": self.url,
            "message_id": self.message_id,
            "at": self.at,
            "headers": self.headers,
            "body": self.body.decode("utf-8", "replace"),
            "attempts": [a.__dict__ for a in self.attempts],
            "delivered": self.delivered,
        }


def compact(data: Any) -> bytes:
    """JSON as the real APIs write it: no spaces, UTF-8, big integers exact."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_answer(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=compact(data), status=status, headers=headers, content_type="application/json"
    )


def parse_body(content_type: str, body: bytes) -> Any:
    if not body:
        return None
    if content_type == "application/json":
        try:
            return json.loads(body)
        except ValueError:
            return None
    if content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return None


def _plain(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def mask(address: str) -> str:
    """Addresses are phone numbers, e-mail addresses and user ids: logs show them masked
    as the library's own lines do (`cascade_notify._logmask.mask_address`)."""
    return mask_address(address)


__all__ = [
    "Accepted",
    "Attempt",
    "RecordedRequest",
    "Webhook",
    "compact",
    "json_answer",
    "mask",
    "parse_body",
]
