"""Receipts in: one framework-free handler, and a raw ASGI app around it.

`handle_webhook(notifier, provider_name, method=, url=, headers=, body=)` answers, in
this order:

- 404 the provider is unknown, or takes no webhooks;
- 405 the method is not one of the provider's `webhook_methods`;
- 413 the body is over `max_body`;
- 401 (or the status the provider's `BadSignature` names) the signature does not
  verify, with the reason logged (nothing is parsed before);
- 400 the verified body is malformed (or a GET is not the provider's challenge); where
  only some receipts of a batch are, the others are recorded all the same;
- the provider's own answer (`ok`, `100`, a challenge), or 200 with a JSON summary,
  once the receipts and signals are recorded, also those about unknown or finished
  messages, so the sender stops retrying; 503 the store cannot take them now, so the
  sender retries.

A rejected request changes nothing, but for the good receipts of a partly malformed
batch. Replays change nothing either: the store keeps each receipt's identity (the
`webhook-id`, or message id and status).

Both work over a narrow `Inbox` (the notifier is one): its providers, and the one
door news comes in by. `asgi_app(inbox)` routes `GET|POST {prefix}/{provider_name}` to it, answers
`GET {prefix}/-/health` (`-` is not a path segment a provider route can have under it,
so the two never clash), reads at most `max_body` bytes, cuts off a sender slower than
`read_timeout`, answers a larger body 413 and closes (it reads and drops up to `DRAIN`
bytes more first, so a sender still writing gets the answer, not a reset; a
`Content-Length` over `max_body + DRAIN` is refused before reading any),
and on ASGI lifespan events starts the notifier (if not running) and stops it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, urlsplit

from cascade_notify import _logmask
from cascade_notify.errors import CascadeError
from cascade_notify.providers._signing import BadSignature
from cascade_notify.providers.base import (
    Inbound,
    MalformedReceipts,
    Provider,
    WebhookRequest,
    WebhookResponse,
)
from cascade_notify.stores.base import ReceiptResult

log = _logmask.logger("cascade_notify.webhooks")

#: The default cap on a webhook body, in bytes.
MAX_BODY: Final = 256 * 1024
#: How much of an oversized body is read (and dropped) before the 413, in bytes.
DRAIN: Final = 1024 * 1024
#: The health route under the prefix.
HEALTH_PATH: Final = "/-/health"

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]

_CLOSE: Final = {"connection": "close"}


class Inbox(Protocol):
    """What the receipts endpoint needs of a notifier: its providers, the one door news
    comes in by, and (for ASGI lifespan) starting and stopping it."""

    @property
    def providers(self) -> Mapping[str, Provider]: ...

    @property
    def running(self) -> bool: ...

    async def take_in(self, inbound: Inbound) -> Sequence[ReceiptResult]:
        """Record the receipts and signals; raise `CascadeError` if the store cannot."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _answer(
    status: int, payload: Mapping[str, object], headers: Mapping[str, str] | None = None
) -> WebhookResponse:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return WebhookResponse(
        status,
        body,
        {"content-type": "application/json", "cache-control": "no-store", **(headers or {})},
    )


def _precheck(inbox: Inbox, provider_name: str, method: str) -> WebhookResponse | None:
    """The answer due before the body is read (404, 405), or None to go on."""
    provider = inbox.providers.get(provider_name)
    if provider is None or not provider.webhook_methods:
        return _answer(404, {"error": "no such provider"})
    allowed = sorted(provider.webhook_methods)
    if method.upper() not in allowed:
        return _answer(405, {"error": "method not allowed"}, {"allow": ", ".join(allowed)})
    return None


def _merge(headers: Headers) -> dict[str, str]:
    # a repeated header becomes one comma-joined value (RFC 9110), so no copy is ignored
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    merged: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _query(url: str) -> dict[str, str]:
    try:
        return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True, max_num_fields=100))
    except ValueError:
        return {}


async def handle_webhook(
    inbox: Inbox,
    provider_name: str,
    *,
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    max_body: int = MAX_BODY,
) -> WebhookResponse:
    """Verify, parse and record one webhook request; return the answer to give.

    `headers` is a mapping or a sequence of (name, value) pairs, values as the server
    decoded them (latin-1 for ASGI); `url` is the URL the sender called (some schemes
    sign it). Never raises (but for cancellation): a failure inside is logged and
    answered 500.
    """
    try:
        return await _handle(inbox, provider_name, method.upper(), url, headers, body, max_body)
    except Exception:
        log.exception(
            "webhook for provider %r failed", provider_name, extra={"provider": provider_name}
        )
        return _answer(500, {"error": "internal error"})


async def _handle(
    inbox: Inbox,
    provider_name: str,
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    max_body: int,
) -> WebhookResponse:
    early = _precheck(inbox, provider_name, method)
    if early is not None:
        return early
    if len(body) > max_body:
        return _answer(413, {"error": f"body over {max_body} bytes"})
    provider = inbox.providers[provider_name]
    request = WebhookRequest(method, url, _merge(headers), bytes(body), _query(url))
    refused: MalformedReceipts | None = None
    try:
        inbound = await provider.receive(request)
    except BadSignature as bad:
        log.info(
            "webhook for %r refused: %s",
            provider_name,
            bad.reason,
            extra={"provider": provider_name},
        )
        return _answer(bad.status, {"error": "bad or missing signature"})
    except MalformedReceipts as exc:  # some of a batch: the good ones are recorded
        inbound, refused = Inbound(receipts=exc.receipts), exc
    except (ValueError, RecursionError) as exc:
        log.info(
            "webhook for %r refused: malformed: %s",
            provider_name,
            exc,
            extra={"provider": provider_name},
        )
        return _answer(400, {"error": f"malformed: {exc}"[:300]})
    try:
        results = await inbox.take_in(inbound)
    except CascadeError:
        log.exception(
            "receipts for %r could not be stored; the sender will retry",
            provider_name,
            extra={"provider": provider_name},
        )
        return _answer(503, {"error": "try again later"}, {"retry-after": "5"})
    if refused is not None:
        log.info(
            "webhook for %r: some receipts refused: malformed: %s",
            provider_name,
            refused,
            extra={"provider": provider_name},
        )
    if refused is None and inbound.answer is not None:
        return inbound.answer
    return _answer(
        200 if refused is None else 400,
        {
            **({} if refused is None else {"error": f"malformed: {refused}"[:300]}),
            "status": "ok" if refused is None else "partly malformed",
            "received": len(results),
            "duplicates": sum(1 for r in results if r.duplicate),
            "unknown": sum(1 for r in results if r.delivery_id is None),
        },
    )


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    pass


class ReceiptsApp:
    """The raw ASGI app `asgi_app()` returns; see that function."""

    def __init__(
        self,
        inbox: Inbox,
        *,
        prefix: str,
        max_body: int,
        public_url: str | None,
        read_timeout: float,
    ) -> None:
        stripped = prefix.strip("/")
        self.notifier = inbox
        self.prefix = f"/{stripped}" if stripped else ""
        self.max_body = max_body
        self.public_url = public_url.rstrip("/") if public_url else None
        self.read_timeout = read_timeout
        self._started_notifier = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        else:  # a websocket: refuse the handshake
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if not self.notifier.running:
                        await self.notifier.start()
                        self._started_notifier = True
                except Exception as exc:
                    log.exception("starting the notifier failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    if self._started_notifier:
                        self._started_notifier = False
                        await self.notifier.stop()
                        log.info("notifier stopped")
                except Exception as exc:
                    log.exception("stopping the notifier failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _route(self, scope: Scope) -> str:
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        # mounted (Starlette, FastAPI): the mount point is in root_path, maybe also in path
        if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
            path = path[len(root) :]
        return path

    def _url(self, scope: Scope, path: str) -> str:
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        if self.public_url is not None:
            url = self.public_url + path
        else:
            host = next(
                (v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"host"),
                None,
            )
            if host is None:
                server = scope.get("server") or ("localhost", None)
                host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
            url = f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{path}"
        return f"{url}?{query}" if query else url

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = self._route(scope)
        method = str(scope.get("method", "GET")).upper()
        head = self.prefix + "/"
        name = path[len(head) :] if path.startswith(head) else ""
        if path == self.prefix + HEALTH_PATH:
            await _respond(send, self._health(method))
            return
        if not name or "/" in name:
            await _respond(send, _answer(404, {"error": "not found"}))
            return
        early = _precheck(self.notifier, name, method)
        if early is not None:
            await _respond(send, early)
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ())]
        declared = next((v for k, v in headers if k.lower() == "content-length"), None)
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                await _respond(send, _answer(400, {"error": "bad content-length"}, _CLOSE))
                return
            if int(declared) > self.max_body:
                if int(declared) <= self.max_body + DRAIN:
                    await self._drain(receive)
                await _respond(send, _too_large(self.max_body))
                return
        try:
            body = await self._read(receive)
        except _TooLarge:
            await self._drain(receive)
            await _respond(send, _too_large(self.max_body))
            return
        except TimeoutError:
            log.info("webhook for %r: body not received within %.3g s", name, self.read_timeout)
            await _respond(send, _answer(408, {"error": "body too slow"}, _CLOSE))
            return
        except _Gone:
            return
        response = await handle_webhook(
            self.notifier,
            name,
            method=method,
            url=self._url(scope, path),
            headers=headers,
            body=body,
            max_body=self.max_body,
        )
        await _respond(send, response)

    def _health(self, method: str) -> WebhookResponse:
        if method != "GET":
            return _answer(405, {"error": "method not allowed"}, {"allow": "GET"})
        if self.notifier.running:
            return _answer(200, {"status": "ok"})
        return _answer(503, {"status": "stopped"})

    async def _drain(self, receive: Receive) -> None:
        """Read and drop what is left of an oversized body, up to DRAIN bytes and within
        `read_timeout`: a sender still writing when the connection closes on unread bytes
        gets a reset instead of the 413 (most clients read nothing before they sent all)."""
        dropped = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.read_timeout):
                while dropped <= DRAIN:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    dropped += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async with asyncio.timeout(self.read_timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Gone
                chunk = bytes(message.get("body", b""))
                size += len(chunk)
                if size > self.max_body:
                    raise _TooLarge
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)


def _too_large(limit: int) -> WebhookResponse:
    # the connection is closed after it: what is left of the body is never read
    return _answer(413, {"error": f"body over {limit} bytes"}, _CLOSE)


async def _respond(send: Send, response: WebhookResponse) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in response.headers.items()
            ],
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def asgi_app(
    inbox: Inbox,
    *,
    prefix: str = "/receipts",
    max_body: int = MAX_BODY,
    public_url: str | None = None,
    read_timeout: float = 10.0,
) -> ReceiptsApp:
    """An ASGI app taking receipts at `POST {prefix}/{provider_name}` (GET for handshakes).

    `GET {prefix}/-/health` answers 200 while the notifier runs, 503 otherwise.
    Mounted under a path (FastAPI/Starlette `Mount`), pass `prefix=""`: the mount
    point is the prefix. `public_url` is the URL the world reaches this app's root at,
    for schemes that sign the URL behind a proxy (default: from the request).
    `read_timeout` bounds, in seconds, the time to receive the whole body.

    Lifespan: served alone (uvicorn, `cascade-notify serve`), the app starts the notifier
    at startup unless it is running, and stops it at shutdown if it started it. Mounted
    in another app, which does not pass lifespan events on to mounts, start and stop
    the notifier in that app's own lifespan.
    """
    return ReceiptsApp(
        inbox, prefix=prefix, max_body=max_body, public_url=public_url, read_timeout=read_timeout
    )


__all__ = ["HEALTH_PATH", "MAX_BODY", "ReceiptsApp", "asgi_app", "handle_webhook"]
