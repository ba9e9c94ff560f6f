"""The one base every emulator stands on: the loopback server, the record of requests,
per-address scripts, the signed webhooks and their retries, and the control surface.

A subclass knows its API: its routes, checks, answers, error table, receipt bodies and
signature. Everything else is here, so every emulator looks and behaves alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Final, Self

import aiohttp
from aiohttp import web

from cascade_notify import _logmask
from cascade_notify.clock import Clock, SystemClock
from cascade_notify.testing.emulators._records import (
    Accepted,
    Attempt,
    RecordedRequest,
    Webhook,
    compact,
    json_answer,
    mask,
    parse_body,
)
from cascade_notify.testing.emulators._script import (
    Entry,
    Scripts,
    ScriptSpec,
    parse_script,
    receipt_plan,
)

CONTROL: Final = "/__emulator/"
logger = _logmask.logger("cascade_notify.emulators")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_current: contextvars.ContextVar[RecordedRequest] = contextvars.ContextVar("record")


class _HangUp(Exception):
    pass


class Emulator(ABC):
    """A loopback HTTP server of one provider's API; `async with` starts and stops it.

    `webhook_url` is where webhooks go (None: recorded in `webhooks`, never posted);
    `clock` drives every delay (receipts, `slow`, retries); `retry_delays` are the waits
    between tries of a webhook the receiver did not answer 2xx; `log` gets one line per
    request and webhook, besides the `cascade_notify.emulators` logger.
    """

    name: ClassVar[str]
    #: Named errors this API's scripts may use.
    errors: ClassVar[Mapping[str, Any]] = {}
    #: The script's receipt names mapped to this API's own status names.
    receipts: ClassVar[Mapping[str, str]] = {}
    #: Inbound events `event()` can trigger.
    events: ClassVar[tuple[str, ...]] = ()
    retry_delays: ClassVar[tuple[float, ...]] = (1.0, 5.0, 30.0, 120.0, 600.0)

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        retry_delays: Sequence[float] | None = None,
        webhook_timeout: float = 10.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.webhook_url = webhook_url
        self.clock: Clock = clock or SystemClock()
        self.host = host
        self.port = port
        self.webhook_retry_delays = tuple(
            type(self).retry_delays if retry_delays is None else retry_delays
        )
        self.webhook_timeout = webhook_timeout
        self.requests: list[RecordedRequest] = []
        self.webhooks: list[Webhook] = []
        self.outbox: list[Accepted] = []
        self._log_to = log
        self._scripts = Scripts()
        self._forced: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._remove_idle: Callable[[], None] | None = None

    # -- life -----------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=4 * 1024**2)
        app.router.add_get(CONTROL + "requests", self._control_requests)
        app.router.add_get(CONTROL + "webhooks", self._control_webhooks)
        app.router.add_get(CONTROL + "settings", self._control_settings)
        app.router.add_post(CONTROL + "script", self._control_script)
        app.router.add_post(CONTROL + "event", self._control_event)
        app.router.add_post(CONTROL + "reset", self._control_reset)
        for method, path, handler in self._routes():
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.webhook_timeout)
        )
        self._remove_idle = self.clock.add_idle_check(lambda: self._busy == 0)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._remove_idle is not None:
            self._remove_idle()
            self._remove_idle = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        """The base URL a provider's `api_url` setting takes."""
        return f"http://{self.host}:{self.port}"

    @property
    def control_url(self) -> str:
        return self.api_url + CONTROL.rstrip("/")

    # -- control --------------------------------------------------------------

    def script(self, address: str, script: ScriptSpec, **options: Any) -> None:
        """Answer `address` (`"*"`: every unscripted one) as `script` says.

        `options` apply to a script given as one name: `script(a, "slow", seconds=3)`.
        """
        if options:
            if not isinstance(script, str):
                raise ValueError("options go with a script given as one name")
            script = {"do": script, **options}
        self._scripts.set(self.normalize(address), parse_script(script, self.errors))

    async def event(self, name: str, address: str, **data: Any) -> list[Webhook]:
        """Trigger an inbound event (a customer opens the bot, reads, unsubscribes…).

        Its webhooks are posted before this returns (first try; retries go on in the
        background) and returned.
        """
        if name not in self.events:
            raise ValueError(f"unknown event {name!r}; known: {', '.join(self.events)}")
        hooks = [
            self._webhook(kind, body, message_id)
            for kind, body, message_id in self._event(name, self.normalize(address), data)
        ]
        for hook in hooks:
            if not await self._attempt(hook):
                self._spawn(self._retry(hook))
        return hooks

    def reset(self) -> None:
        """Forget scripts, records, pending webhooks and what events changed."""
        for task in list(self._tasks):
            task.cancel()
        self._scripts.clear()
        self._forced.clear()
        self.requests.clear()
        self.webhooks.clear()
        self.outbox.clear()
        self._reset_state()

    def sent_to(self, address: str) -> list[Accepted]:
        """Messages accepted for `address`, oldest first."""
        key = self.normalize(address)
        return [m for m in self.outbox if m.address == key]

    async def drain(self, timeout: float = 5.0) -> None:
        """Real time: wait until no webhook is pending (for a `SystemClock` run)."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- for subclasses -------------------------------------------------------

    @abstractmethod
    def _routes(self) -> list[tuple[str, str, Handler]]:
        """`(method, path, handler)` of the API's real routes."""

    @abstractmethod
    def _error(self, entry: Entry, address: str) -> web.StreamResponse:
        """The answer for a named error of `errors`."""

    @abstractmethod
    def _sign(self, body: bytes) -> dict[str, str]:
        """The headers a webhook body goes out with (signature, content type)."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The provider's YAML settings (type included) that reach this emulator."""

    def _receipt(self, message: Accepted, status: str, entry: Entry) -> bytes:
        """The body of one status webhook about `message`."""
        raise NotImplementedError

    def _event(
        self, name: str, address: str, data: Mapping[str, Any]
    ) -> list[tuple[str, bytes, str | None]]:
        """`(kind, body, message id)` of the webhooks an inbound event sends."""
        raise NotImplementedError

    def normalize(self, address: str) -> str:
        """An address as scripts and the outbox key it."""
        return address

    def _reset_state(self) -> None:  # noqa: B027  (an optional hook: nothing to forget here)
        """Forget what inbound events changed."""

    def _public_path(self, path: str) -> str:
        """The path as a log line may show it."""
        return path

    def _not_found(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "not found"}, status=404)

    def force(self, address: str, error: str | None) -> None:
        """Answer every later send to `address` with `error` (None: stop), whatever the
        script says: what a block or an unsubscribe does."""
        key = self.normalize(address)
        if error is None:
            self._forced.pop(key, None)
        else:
            self._forced[key] = error

    def record_of(self, request: web.Request) -> RecordedRequest:
        """The record of the request being handled."""
        return _current.get()

    def new_id(self) -> int:
        return next(self._ids)

    async def _send(
        self,
        request: web.Request,
        address: str,
        accept: Callable[[], Accepted],
        answer: Callable[[Accepted, Entry], web.StreamResponse],
    ) -> web.StreamResponse:
        """Answer one send as the address's script says: wait, hang up, fail or accept
        (then schedule the entry's receipts)."""
        record = self.record_of(request)
        record.address = address = self.normalize(address)
        forced = self._forced.get(address)
        entry = Entry(forced) if forced else self._scripts.next(address)
        record.entry = entry.do
        if entry.do == "slow":
            await self.clock.sleep(entry.seconds)
            entry = entry.then or Entry("deliver")
        if entry.do == "hang_up":
            if entry.then is not None and entry.then.do not in self.errors:
                self._accept(accept, entry.then)
            raise _HangUp
        if entry.do in self.errors:
            return self._error(entry, address)
        return answer(self._accept(accept, entry), entry)

    def _accept(self, accept: Callable[[], Accepted], entry: Entry) -> Accepted:
        message = accept()
        self.outbox.append(message)
        for delay, status in receipt_plan(entry, self.receipts):
            self._spawn(self._post_later(delay, message, status, entry))
        return message

    # -- webhooks -------------------------------------------------------------

    def _webhook(self, kind: str, body: bytes, message_id: str | None = None) -> Webhook:
        hook = Webhook(kind, self.webhook_url, body, self._sign(body), self.clock.now(), message_id)
        self.webhooks.append(hook)
        return hook

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_later(self, delay: float, message: Accepted, status: str, entry: Entry) -> None:
        await self.clock.sleep(delay)
        hook = self._webhook(status, self._receipt(message, status, entry), message.id)
        if not await self._attempt(hook):
            await self._retry(hook)

    async def _retry(self, hook: Webhook) -> None:
        for wait in self.webhook_retry_delays:
            await self.clock.sleep(wait)
            if await self._attempt(hook):
                return

    async def _attempt(self, hook: Webhook) -> bool:
        """Post once; True when the receiver answered 2xx (or there is nowhere to post)."""
        if hook.url is None or self._session is None:
            return True
        self._busy += 1
        try:
            async with self._session.post(hook.url, data=hook.body, headers=hook.headers) as resp:
                await resp.read()
                hook.attempts.append(Attempt(self.clock.now(), resp.status))
        except (aiohttp.ClientError, TimeoutError) as exc:
            hook.attempts.append(Attempt(self.clock.now(), None, type(exc).__name__))
        finally:
            self._busy -= 1
        last = hook.attempts[-1]
        self._log(f"webhook {hook.kind} -> {hook.url} {last.status or last.error}")
        return hook.delivered

    async def _get(self, url: str, params: Mapping[str, str]) -> tuple[int | None, bytes]:
        """One GET to the receiver (a verification handshake)."""
        assert self._session is not None, "the emulator is not running"
        self._busy += 1
        try:
            async with self._session.get(url, params=params) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            return None, b""
        finally:
            self._busy -= 1

    # -- the server -----------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL):
            try:
                return await handler(request)
            except ValueError as exc:
                return web.json_response({"ok": False, "error": str(exc)}, status=400)
        body = await request.read()
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            parsed=parse_body(request.content_type, body),
            at=self.clock.now(),
        )
        _current.set(record)
        self.requests.append(record)
        transport = request.transport
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            response = self._not_found(request)
        except web.HTTPMethodNotAllowed:
            response = self._not_found(request)
        except _HangUp:
            if transport is not None:
                transport.abort()
            self._log_request(record)
            return web.Response()
        record.status = response.status
        self._log_request(record)
        return response

    def _log_request(self, record: RecordedRequest) -> None:
        status = "hung up" if record.status is None else str(record.status)
        to = f" to {mask(record.address)}" if record.address else ""
        entry = f" ({record.entry})" if record.entry else ""
        self._log(f"{record.method} {self._public_path(record.path)}{to} -> {status}{entry}")

    def _log(self, line: str) -> None:
        text = f"{self.name}: {line}"
        logger.info(text)
        if self._log_to is not None:
            self._log_to(text)

    async def _control_requests(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"requests": [r.as_json() for r in self.requests]})

    async def _control_webhooks(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"webhooks": [w.as_json() for w in self.webhooks]})

    async def _control_settings(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"name": self.name, "api_url": self.api_url, "settings": self.settings()}
        )

    async def _control_script(self, request: web.Request) -> web.StreamResponse:
        data = await _json_object(request)
        address = data.get("address")
        if not isinstance(address, str) or "script" not in data:
            raise ValueError("POST a JSON object with 'address' and 'script'")
        self.script(address, data["script"])
        return web.json_response({"ok": True, "scripts": self._scripts.as_json()})

    async def _control_event(self, request: web.Request) -> web.StreamResponse:
        data = await _json_object(request)
        name, address = data.pop("event", None), data.pop("address", None)
        if not isinstance(name, str) or not isinstance(address, str):
            raise ValueError("POST a JSON object with 'event' and 'address'")
        hooks = await self.event(name, address, **data)
        return web.json_response({"ok": True, "webhooks": [h.as_json() for h in hooks]})

    async def _control_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return web.json_response({"ok": True})


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.read() or b"{}")
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


__all__ = [
    "CONTROL",
    "Accepted",
    "Attempt",
    "Emulator",
    "RecordedRequest",
    "Webhook",
    "compact",
    "json_answer",
]
