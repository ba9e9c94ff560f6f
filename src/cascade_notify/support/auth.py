"""Who may look: the `auth` callable a host app gives, the bearer-token mode of
`cascade-notify serve --support`, and the CSRF tokens of the page's forms.

`auth` gets a `SupportRequest` and returns a role (`"agent"`, `"operator"`), a `Grant`
(a role with the user's name and time zone), or None when nobody is signed in (401);
it raises `AccessDenied` for someone signed in who may not look (403). It may be a
coroutine function, so a host app can ask its own session store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from cascade_notify.errors import CascadeError

#: What a person on the page may do: an agent reads, an operator also opens and closes
#: circuit breakers (and sees addresses in full, by default).
Role = Literal["agent", "operator"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
#: The environment variables of `serve --support`'s token mode.
TOKEN_ENV: Final = "CASCADE_NOTIFY_SUPPORT_TOKEN"  # noqa: S105 - a variable's name
AGENT_TOKEN_ENV: Final = "CASCADE_NOTIFY_SUPPORT_AGENT_TOKEN"  # noqa: S105 - a variable's name


class SupportError(CascadeError):
    """The support page cannot be served as asked: its extra is missing, or `auth`
    returned something that is not a role."""


class AccessDenied(CascadeError):
    """Raised by an `auth` callable: this person is signed in but may not look (403)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """What `auth` allows: the `role`, who it is (`user`, written beside a breaker change
    and bound into the CSRF token) and their IANA time zone (times are shown in it)."""

    role: Role
    user: str = ""
    timezone: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SupportRequest:
    """The request as `auth` sees it: `path` below the mount point, the first value of
    each query field, headers with lower-case names, cookies, and the ASGI `scope`
    (where a host's middleware leaves its session or user, e.g. `scope["user"]`)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    scope: Mapping[str, Any]


Verdict = Role | Grant | None
Auth = Callable[[SupportRequest], Verdict | Awaitable[Verdict]]


async def grant_of(auth: Auth, request: SupportRequest) -> Grant | None:
    """What `auth` says of `request`; AccessDenied propagates; SupportError on a value
    that is not a role, a Grant or None."""
    verdict = auth(request)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    if verdict is None or isinstance(verdict, Grant):
        if isinstance(verdict, Grant) and verdict.role not in ROLES:
            raise SupportError(f"auth granted role {verdict.role!r}; roles are {ROLES}")
        return verdict
    if isinstance(verdict, str) and verdict in ROLES:
        return Grant(role=verdict)
    raise SupportError(
        f"auth returned {verdict!r}: return 'agent', 'operator', a Grant, or None "
        "(not signed in), or raise AccessDenied"
    )


def _presented(headers: Mapping[str, str]) -> str | None:
    """The token in `Authorization: Bearer T`, or the password of `Basic` (a browser's
    own sign-in prompt)."""
    given = headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def bearer_auth(tokens: Mapping[str, Role]) -> Auth:
    """An `auth` for tokens: each token (at least 16 characters) grants its role, given
    as `Authorization: Bearer TOKEN` or as the password of HTTP Basic."""
    for token, role in tokens.items():
        if len(token) < 16:
            raise SupportError("a support token is at least 16 characters (openssl rand -hex 16)")
        if role not in ROLES:
            raise SupportError(f"token role {role!r} is not one of {ROLES}")
    known = [(token.encode(), role) for token, role in tokens.items()]

    def check(request: SupportRequest) -> Grant | None:
        given = _presented(request.headers)
        if given is None:
            return None
        found: Role | None = None
        for token, role in known:  # every one compared: the time says nothing of which
            if hmac.compare_digest(given.encode(), token):
                found = role
        return None if found is None else Grant(role=found, user=f"{found} token")

    return check


def env_auth(env: Mapping[str, str] | None = None) -> Auth:
    """`bearer_auth` from the environment: CASCADE_NOTIFY_SUPPORT_TOKEN grants
    `operator`, CASCADE_NOTIFY_SUPPORT_AGENT_TOKEN (optional) `agent`."""
    env = os.environ if env is None else env
    operator = env.get(TOKEN_ENV)
    if not operator:
        raise SupportError(f"the support page needs a token: set {TOKEN_ENV}")
    tokens: dict[str, Role] = {operator: "operator"}
    agent = env.get(AGENT_TOKEN_ENV)
    if agent:
        if agent == operator:
            raise SupportError(f"{AGENT_TOKEN_ENV} must differ from {TOKEN_ENV}")
        tokens[agent] = "agent"
    return bearer_auth(tokens)


class Csrf:
    """Tokens for the page's forms: an HMAC of the role, the user and the day, so a
    form posted from another site (which cannot read our pages) carries none. Give
    every process behind one address the same `secret`."""

    #: A token is good on the day it was made and the next (UTC days).
    DAY: Final = 86400

    def __init__(self, secret: bytes | None = None) -> None:
        self._key = secret if secret is not None else secrets.token_bytes(32)

    def _mac(self, grant: Grant, day: int) -> str:
        text = f"{grant.role}\n{grant.user}\n{day}".encode()
        return hmac.new(self._key, text, hashlib.sha256).hexdigest()

    def token(self, grant: Grant, now: float) -> str:
        return self._mac(grant, int(now // self.DAY))

    def check(self, grant: Grant, token: str, now: float) -> bool:
        day = int(now // self.DAY)
        given = token.encode()
        good = [hmac.compare_digest(given, self._mac(grant, d).encode()) for d in (day, day - 1)]
        return any(good)
