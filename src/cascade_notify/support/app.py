"""The support page as an ASGI app: routes, the security headers every answer carries,
the breaker form's checks, and Jinja2 rendering with autoescape on everywhere.

Routes, below the mount point:

- `GET /?q=…&cursor=…`: the search box and a page of deliveries, newest first;
- `GET /d/{delivery_id}`: one delivery's timeline;
- `GET /operator?since=7d`: the operator's view;
- `POST /breakers/{provider}`: open or close a breaker (operators, with a CSRF token).

Any page takes `tz=Area/City`: the agent's time zone, for this page.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import tzinfo
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cascade_notify import _logmask
from cascade_notify._duration import parse_duration
from cascade_notify.errors import CascadeError
from cascade_notify.observe.types import QueryError
from cascade_notify.support import pages
from cascade_notify.support.auth import (
    AccessDenied,
    Auth,
    Csrf,
    Grant,
    Role,
    SupportError,
    SupportRequest,
    grant_of,
)
from cascade_notify.support.svg import Bar, bars

if TYPE_CHECKING:
    from jinja2 import Environment

    from cascade_notify.notifier import Notifier

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = _logmask.logger("cascade_notify.support")

#: The largest form body taken (the breaker form is a few hundred bytes).
MAX_FORM: Final = 8192
PERIODS: Final = (("1d", "the last day"), ("7d", "the last 7 days"), ("30d", "the last 30 days"))
_KIND_WORDS: Final = {
    "delivery": "delivery id",
    "idempotency_key": "idempotency key",
    "phone": "phone number",
    "email": "e-mail",
    "recipient": "recipient id",
    "recent": "",
}
_WHAT: Final = {
    "created": "created",
    "skipped": "skipped",
    "attempt": "attempt",
    "receipt": "receipt",
    "finished": "finished",
}


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _environment() -> Environment:
    try:
        import jinja2
    except ImportError as exc:
        raise SupportError(
            f"the support page needs Jinja2: pip install 'cascade-notify[support]' ({exc})"
        ) from None
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cascade_notify.support", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        money=lambda v: "" if v is None else f"{v:.4f}".rstrip("0").rstrip("."),
        percent=lambda v: "" if v is None else f"{100 * v:.1f}%",
        seconds=lambda v: "" if v is None else f"{v:.1f} s",
        status_class=pages.status_class,
    )
    return env


def _zone(name: str | None) -> tzinfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


class SupportApp:
    """The support page over one notifier (see the module's docstring for the routes).

    `auth` decides who may look (see `cascade_notify.support.auth`); `reveal` the roles
    that see phone numbers and e-mail addresses in full; `timezone` the agents' zone when
    neither their Grant nor `?tz=` names one; `secret` signs the forms' CSRF tokens (give
    every process behind one address the same one). `figures_for`: how many seconds the
    operator's view shows a period's figures before it counts them again (they aggregate
    the whole period, seconds on a big store): once they are older, the next view shows
    them still and starts a count in the background, which the view after shows; only a
    period's first view waits for its count. 0: count on every view. Breakers are always
    read anew. The notifier must be running: the host app starts it; served alone, the
    lifespan does."""

    def __init__(
        self,
        notifier: Notifier,
        *,
        auth: Auth,
        reveal: tuple[Role, ...] = ("operator",),
        timezone: str = "UTC",
        secret: bytes | None = None,
        figures_for: float = 60.0,
    ) -> None:
        if not callable(auth):
            raise SupportError("auth is required: a callable(request) -> role, Grant or None")
        zone = _zone(timezone)
        if zone is None:
            raise SupportError(f"timezone {timezone!r} is not an IANA time zone")
        self.notifier = notifier
        self.auth = auth
        self.reveal = frozenset(reveal)
        self.zone = zone
        self.csrf = Csrf(secret)
        self.templates = _environment()
        self.figures_for = figures_for
        self._figures: dict[str, tuple[float, pages.Operator]] = {}
        self._counting: dict[str, asyncio.Task[None]] = {}
        self._started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        response = await self._answer(scope, receive)
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
        body = b"" if scope.get("method") == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if not self.notifier.running:
                    await self.notifier.start()
                    self._started = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._started:
                    await self.notifier.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _answer(self, scope: Scope, receive: Receive) -> Response:
        nonce = secrets.token_urlsafe(16)
        request = _request(scope)
        base = _base(scope)
        try:
            response = await self._route(request, base, nonce, receive)
        except QueryError as exc:  # a hand-edited cursor, say
            response = self._error(400, "Bad request", str(exc), nonce)
        except CascadeError as exc:
            log.warning("support page %s %s: %s", request.method, request.path, exc)
            response = self._error(500, "Something went wrong", str(exc), nonce)
        except Exception:
            log.exception("support page %s %s", request.method, request.path)
            response = self._error(500, "Something went wrong", "see the server's log", nonce)
        response.headers.update(_secure(nonce))
        return response

    async def _route(
        self, request: SupportRequest, base: str, nonce: str, receive: Receive
    ) -> Response:
        try:
            grant = await grant_of(self.auth, request)
        except AccessDenied as exc:
            return self._error(403, "Forbidden", str(exc) or "you may not see this page", nonce)
        if grant is None:
            answer = self._error(401, "Sign in", "sign in to see this page", nonce)
            answer.headers["www-authenticate"] = 'Bearer realm="cascade-notify support"'
            return answer
        path = request.path
        zone = _zone(request.query.get("tz")) or _zone(grant.timezone) or self.zone
        context: dict[str, Any] = {
            "base": base,
            "nonce": nonce,
            "grant": grant,
            "agent_zone": str(zone),
        }
        if path == "/breakers" or path.startswith("/breakers/"):
            if request.method != "POST":
                return self._error(
                    405, "Method not allowed", "use the operator's view", nonce, allow="POST"
                )
            return await self._breaker(
                request, grant, path.removeprefix("/breakers/"), base, nonce, receive
            )
        if request.method not in ("GET", "HEAD"):
            return self._error(
                405, "Method not allowed", "this page is read-only", nonce, allow="GET, HEAD"
            )
        if path in ("", "/"):
            found = await pages.search(
                self.notifier, request.query.get("q", ""), request.query.get("cursor")
            )
            shown = self._phone(found, grant)
            return self._page(
                "search.html", context, zone, found=found, kind_words=_KIND_WORDS, shown_phone=shown
            )
        if path.startswith("/d/"):
            delivery = await self.notifier.store.get(path.removeprefix("/d/"))
            if delivery is None:
                return self._error(404, "Not found", "no such delivery", nonce)
            show = self.notifier.config.support.shows(delivery.message.category)
            queued = await pages.calls_of(self.notifier, delivery)
            reveal = grant.role in self.reveal
            told = pages.story(delivery, zone, reveal=reveal, show_text=show, queued=queued)
            return self._page("delivery.html", context, zone, s=told, what=_WHAT)
        if path == "/operator":
            return await self._operator(request, grant, context, zone)
        return self._error(404, "Not found", "no such page", nonce)

    def _phone(self, found: pages.Search, grant: Grant) -> str:
        if found.kind != "phone" or found.value is None:
            return ""
        return found.value if grant.role in self.reveal else pages.mask(found.value, None)

    async def _operator(
        self, request: SupportRequest, grant: Grant, context: dict[str, Any], zone: tzinfo
    ) -> Response:
        period = request.query.get("since", "7d")
        try:
            seconds = parse_duration(period)
        except ValueError:
            period, seconds = "7d", 7 * 86400.0
        now = self.notifier.clock.now()
        kept = self._figures.get(period) if self.figures_for > 0 else None
        if kept is None:
            seen = await pages.operator(self.notifier, now - seconds, now)
            self._keep(period, now, seen)
        else:
            if now - kept[0] >= self.figures_for and period not in self._counting:
                task = asyncio.create_task(self._count(period, seconds))
                self._counting[period] = task
                task.add_done_callback(lambda _: self._counting.pop(period, None))
            seen = await pages.fresh_breakers(self.notifier, kept[1])
        channels = seen.by_channel.rows
        rate = [Bar(str(r.key[0]), (r.delivery_rate,), _pct(r.delivery_rate)) for r in channels]
        times = [
            Bar(str(r.key[0]), (r.median_seconds, r.p95_seconds), _secs(r.p95_seconds))
            for r in channels
        ]
        spend = [Bar(str(r.key[0]), (r.spent,), _money(r.spent)) for r in channels]
        charts = {
            "rate": bars("Delivery rate", rate, top=1.0),
            "times": bars("Time to delivery: p50, p95", times, legend=("p50", "p95")),
            "spend": bars("Spend", spend),
        }
        changed = request.query.get("changed")
        problem = request.query.get("problem")
        return self._page(
            "operator.html", context, zone, o=seen, charts=charts, periods=PERIODS, period=period,
            may_act=grant.role == "operator", csrf=self.csrf.token(grant, time.time()),
            changed=changed, problem=problem, counted=pages.when(seen.until, zone),
        )  # fmt: skip

    def _keep(self, period: str, now: float, seen: pages.Operator) -> None:
        if self.figures_for > 0:
            self._figures[period] = (now, seen)  # one entry per period of PERIODS at most

    async def _count(self, period: str, seconds: float) -> None:
        now = self.notifier.clock.now()
        try:
            self._keep(period, now, await pages.operator(self.notifier, now - seconds, now))
        except Exception:  # the view goes on showing the last count; say why it is old
            log.exception("support page: counting the operator's view of %s", period)

    async def _breaker(
        self,
        request: SupportRequest,
        grant: Grant,
        provider: str,
        base: str,
        nonce: str,
        receive: Receive,
    ) -> Response:
        if grant.role != "operator":
            return self._error(403, "Forbidden", "only an operator opens or closes breakers", nonce)
        if not _same_origin(request.headers):
            return self._error(403, "Forbidden", "the form came from another site", nonce)
        form = await _form(receive)
        if form is None:
            return self._error(413, "Too large", f"a form is at most {MAX_FORM} bytes", nonce)
        # the CSRF tokens are wall-clock, as webhook signatures are: never the injected clock
        if not self.csrf.check(grant, form.get("csrf", ""), time.time()):
            return self._error(
                403, "Forbidden", "the form's token is missing or stale: reload the page", nonce
            )
        if provider not in self.notifier.providers:
            return self._error(404, "Not found", f"no provider {provider!r} in the policy", nonce)
        reason = form.get("reason", "").strip()
        action = form.get("action")
        back = f"{base}/operator?"
        if not reason:
            return _redirect(back + "problem=" + quote("say why: a reason is required"))
        if len(reason) > 200:
            return _redirect(back + "problem=" + quote("a reason is at most 200 characters"))
        who = grant.user or grant.role
        why = f"{reason} ({who}, support page)"
        try:
            if action == "close":
                await self.notifier.breakers.close(provider, reason=why)
            elif action == "open":
                seconds = parse_duration(form.get("duration", "1h"))
                if not math.isfinite(seconds) or seconds <= 0:
                    raise ValueError("a duration is a positive time, e.g. 30m or 2h")
                await self.notifier.breakers.open(provider, seconds, reason=why)
            else:
                return self._error(400, "Bad request", "action is open or close", nonce)
        except (ValueError, CascadeError) as exc:
            return _redirect(back + "problem=" + quote(f"{provider}: {exc}"))
        log.info("breaker %s %s by %s on the support page: %s", provider, action, who, reason)
        done = f"{provider}: breaker {'closed' if action == 'close' else 'opened'}"
        return _redirect(back + "changed=" + quote(done))

    def _page(self, name: str, context: dict[str, Any], zone: tzinfo, **values: Any) -> Response:
        template = self.templates.get_template(name)
        env = dict(context, **values)
        html = template.render(env, when=lambda ts: pages.when(ts, zone))
        return Response(200, html.encode())

    def _error(
        self, status: int, title: str, message: str, nonce: str, *, allow: str | None = None
    ) -> Response:
        html = self.templates.get_template("error.html").render(
            status=status, title=title, message=message
        )
        answer = Response(status, html.encode())
        if allow is not None:
            answer.headers["allow"] = allow
        return answer


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


def _secure(nonce: str) -> dict[str, str]:
    """What every answer carries: no script at all, styles only with this answer's nonce,
    never framed, never cached (it shows personal data), no referrer (a search is in the URL)."""
    return {
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
        "pragma": "no-cache",
    }


def _redirect(location: str) -> Response:
    # after a POST, the browser GETs the page again (a reload never posts twice)
    return Response(303, b"", {"location": location})


def _request(scope: Scope) -> SupportRequest:
    headers: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        name = key.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[name] = f"{headers[name]}, {text}" if name in headers and name != "cookie" else text
    cookies: dict[str, str] = {}
    if "cookie" in headers:
        jar: SimpleCookie = SimpleCookie()
        with contextlib.suppress(CookieError):
            jar.load(headers["cookie"])
        cookies = {k: m.value for k, m in jar.items()}
    query: dict[str, str] = {}
    raw = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(raw, keep_blank_values=True):
        query.setdefault(key, value)
    return SupportRequest(
        method=scope.get("method", "GET"),
        path=_below(scope),
        query=query,
        headers=headers,
        cookies=cookies,
        scope=scope,
    )


def _below(scope: Scope) -> str:
    """The path below the mount point: Starlette keeps the whole path in `path` and the
    mount's in `root_path`; a plain dispatcher may strip it."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def _base(scope: Scope) -> str:
    return str(scope.get("root_path", "")).rstrip("/")


def _same_origin(headers: Mapping[str, str]) -> bool:
    """False for a form a browser says came from elsewhere (Fetch metadata, or an Origin
    naming another host). Our pages send no referrer, so a browser sends `Origin: null`
    with their own forms: that, and no Origin at all, the CSRF token decides."""
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == headers.get("host", "")


async def _form(receive: Receive) -> dict[str, str] | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > MAX_FORM:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    form: dict[str, str] = {}
    for key, value in parse_qsl(
        b"".join(chunks).decode("utf-8", "replace"), keep_blank_values=True
    ):
        form.setdefault(key, value)
    return form


__all__ = ["SupportApp"]
