"""The shared base of every HTTP provider: the client, the one translation of transport
errors, Retry-After, and bounded reads. A provider on it writes only its payload and
the parsing of its answers.

The client:

- an injected `httpx.AsyncClient` (`client=`, or `Notifier(http=client)` for every
  provider) gets every request through httpx's public API, and stays the caller's to
  close; an injected transport (`http=httpx.MockTransport(...)`) gets a client of ours
  around it;
- with nothing injected, requests go out on an `aiohttp.ClientSession` of our own:
  the fastest sound transport measured (benchmarks section 2), honouring the
  environment's proxy settings (`HTTP_PROXY`, `NO_PROXY`) as httpx does.

Transport failures are classified by what happened on the wire, in `translate` alone:
nothing written yet (refused, DNS, reset while connecting, connect timeout) is a
`TransientError`; anything after the request may have been written (read timeout,
server hung up, protocol error, our overall deadline) is an `UnknownOutcomeError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import aiohttp
import httpx
import yarl

from cascade_notify.clock import Clock
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
)
from cascade_notify.providers._signing import wall_time
from cascade_notify.providers.base import Provider, ProviderSettings

#: What `Notifier(http=...)` and a provider's `http=` take.
HttpClient = httpx.AsyncClient | httpx.AsyncBaseTransport

USER_AGENT = "cascade-notify (+https://github.com/cascade-notify)"
#: The most of an answer's body read by default: enough for any API's JSON answer.
MAX_ANSWER = 64 * 1024
# Most servers drop idle keep-alive connections after 5 s or more; a POST on one they
# are closing ends as "server disconnected", an unknown outcome, so idle ones go first.
_KEEPALIVE = 4.0
_MAX_CONNECTIONS = 100
_LIMITS = httpx.Limits(
    max_connections=_MAX_CONNECTIONS, max_keepalive_connections=20, keepalive_expiry=_KEEPALIVE
)


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status, lower-cased headers, and at most `limit` bytes of body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON (strict UTF-8, no NaN); ValueError if it is not."""
        return load_json(self.body)

    def text(self, limit: int = 300) -> str:
        """The body as text for an error message: decoded leniently, one line, bounded."""
        words = self.body[: limit * 4].decode("utf-8", "replace").split()
        return " ".join(words)[:limit]


def load_json(body: bytes) -> Any:
    """The one JSON parser answers and webhooks go through: strict UTF-8, no NaN/Infinity,
    and a body nested too deeply is a ValueError, not a RecursionError."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_body(payload: Any) -> bytes:
    """Compact UTF-8 JSON; ValueError for what JSON cannot hold (NaN, sets, ...)."""
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    return text.encode("utf-8", "surrogatepass")


def form_body(fields: Mapping[str, str] | list[tuple[str, str]]) -> bytes:
    """`application/x-www-form-urlencoded` bytes."""
    return urlencode(fields).encode("ascii")


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` value (seconds or an HTTP date), or None.

    `now` is wall-clock time: an HTTP date is the server's wall clock."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) <= 9:
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class HttpProvider(Provider):
    """A provider that talks to an HTTP API. Subclasses call `await self.request(...)`
    and turn the `Answer` into a `SendResult` or an error; `refusal()` classifies the
    HTTP statuses every API shares."""

    #: Seconds each phase of a request may take when the settings give no `timeout`.
    default_timeout: ClassVar[float] = 10.0
    takes_http: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        *,
        clock: Clock | None = None,
        client: httpx.AsyncClient | None = None,
        http: HttpClient | None = None,
    ) -> None:
        super().__init__(name, settings, clock=clock)
        given = client if client is not None else http
        self._client: httpx.AsyncClient | None = None
        self._owns_client = True
        if isinstance(given, httpx.AsyncClient):
            self._client, self._owns_client = given, False
        elif given is not None:
            self._client = httpx.AsyncClient(
                transport=given, follow_redirects=False, timeout=self.timeout
            )
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str | None] = {}
        phase = self.timeout
        self._httpx_timeout = httpx.Timeout(phase)
        self._aiohttp_timeout = aiohttp.ClientTimeout(
            sock_connect=phase, sock_read=phase, connect=phase
        )
        # each phase is bounded by `timeout`; this bounds a server that trickles bytes
        self._deadline = 2 * phase
        # a request waiting on a socket is invisible to a fake clock's settling: say so,
        # or FakeClock.advance() would run timers (a lease, a deadline) past a live call
        self._in_flight = 0
        self._remove_idle_check: Callable[[], None] | None = None

    async def start(self) -> None:
        if self._remove_idle_check is None:
            self._remove_idle_check = self.clock.add_idle_check(lambda: self._in_flight == 0)

    @property
    def timeout(self) -> float:
        value = getattr(self.settings, "timeout", None)
        return float(value) if value is not None else self.default_timeout

    @property
    def injected(self) -> bool:
        """Whether requests go through an httpx client (injected, or around a transport)."""
        return self._client is not None

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        limit: int = MAX_ANSWER,
    ) -> Answer:
        """Make one request and read at most `limit` bytes of the answer.

        Raise only `ProviderError`s: a transport failure as `translate` says."""
        sent = {"user-agent": USER_AGENT, **(headers or {})}
        self._in_flight += 1
        try:
            async with asyncio.timeout(self._deadline):
                if self._client is not None:
                    return await self._httpx(method, url, content, sent, limit)
                return await self._aiohttp(method, url, content, sent, limit)
        except ProviderError:
            raise
        except Exception as exc:
            raise self.translate(exc) from exc
        finally:
            self._in_flight -= 1

    async def _aiohttp(
        self, method: str, url: str, content: bytes | None, headers: dict[str, str], limit: int
    ) -> Answer:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=_MAX_CONNECTIONS, keepalive_timeout=_KEEPALIVE
                ),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        async with session.request(
            method,
            yarl.URL(url, encoded=True),
            data=content,
            headers=headers,
            allow_redirects=False,
            compress=False,
            timeout=self._aiohttp_timeout,
            proxy=self._proxy_for(url),
        ) as answer:
            body = bytearray()
            # best effort: the status says what happened; a body cut short only loses words
            with contextlib.suppress(aiohttp.ClientError, asyncio.IncompleteReadError):
                while len(body) < limit:
                    chunk = await answer.content.read(limit - len(body))
                    if not chunk:
                        break
                    body += chunk
            return Answer(
                answer.status, {k.lower(): v for k, v in answer.headers.items()}, bytes(body)
            )

    async def _httpx(
        self, method: str, url: str, content: bytes | None, headers: dict[str, str], limit: int
    ) -> Answer:
        assert self._client is not None
        async with self._client.stream(
            method, url, content=content, headers=headers, timeout=self._httpx_timeout
        ) as response:
            body = bytearray()
            with contextlib.suppress(httpx.TransportError, httpx.DecodingError):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= limit:
                        break
            return Answer(
                response.status_code,
                {k.lower(): v for k, v in response.headers.items()},
                bytes(body[:limit]),
            )

    def _proxy_for(self, url: str) -> str | None:
        """The proxy the environment names for `url` (`HTTP_PROXY`, `HTTPS_PROXY`, minus
        `NO_PROXY`), as httpx reads them; looked up once per origin, not per request
        (aiohttp's `trust_env` does it per request, and that cost 60% of the throughput)."""
        origin = url.split("/", 3)[:3]
        key = "/".join(origin)
        if key not in self._proxies:
            parts = urlsplit(url)
            proxy = urllib.request.getproxies().get(parts.scheme)
            if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
                proxy = None
            if len(self._proxies) > 64:
                self._proxies.clear()
            self._proxies[key] = proxy
        return self._proxies[key]

    def translate(self, exc: BaseException) -> ProviderError:
        """The one place a transport's exception becomes ours, by what actually happened."""
        name, text = self.name, f"{type(exc).__name__}: {exc}".rstrip(": ")
        cause = _aiohttp_cause(exc)
        if cause is not None:
            # aiohttp raises these only while connecting: no byte of the request went out
            if isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
                return TransientError(f"cannot connect: {cause}", provider=name, code="connect")
            if isinstance(cause, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
                return PermanentError(f"bad url: {cause}", provider=name, code="url")
            return UnknownOutcomeError(
                f"the request may have been received: {type(cause).__name__}: {cause}",
                provider=name,
                code="after_send",
            )
        if isinstance(
            exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.ProxyError
        ):
            return TransientError(f"cannot connect: {text}", provider=name, code="connect")
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL | httpx.LocalProtocolError):
            return PermanentError(f"the request cannot be made: {text}", provider=name, code="url")
        # read/write timeouts and errors, a protocol error, our overall deadline, the rest
        return UnknownOutcomeError(
            f"the request may have been received: {text}", provider=name, code="after_send"
        )

    def refusal(self, answer: Answer, message: str, code: str | None = None) -> ProviderError:
        """The class every HTTP API shares for a non-2xx status: 408, 429 and 5xx are
        transient (after `Retry-After`), 401 and 403 are about the account, the rest
        permanent. A provider classifies its own error codes first, then calls this."""
        status = answer.status
        code = code or str(status)
        if status in (408, 429) or status >= 500:
            wait = retry_after(answer.headers.get("retry-after"), wall_time())
            return TransientError(message, provider=self.name, code=code, retry_after=wait)
        if status < 400:
            message += " (redirects are not followed; configure the final address)"
        return PermanentError(message, provider=self.name, code=code, account=status in (401, 403))

    async def aclose(self) -> None:
        """Close what the provider opened itself (an injected client is the caller's)."""
        if self._remove_idle_check is not None:
            self._remove_idle_check()
            self._remove_idle_check = None
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        if self._owns_client and self._client is not None:
            await self._client.aclose()


def _aiohttp_cause(exc: BaseException) -> aiohttp.ClientError | None:
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return None
        if isinstance(current, aiohttp.ClientError):
            return current
        current = current.__cause__ or current.__context__
    return None


__all__ = [
    "MAX_ANSWER",
    "USER_AGENT",
    "Answer",
    "HttpClient",
    "HttpProvider",
    "form_body",
    "json_body",
    "load_json",
    "retry_after",
]
