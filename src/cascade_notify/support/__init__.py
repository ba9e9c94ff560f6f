"""The support page: a read-only web view of deliveries for support agents and
operators, mounted in the host's own app (`notifier.support_app(auth=...)`) or served
by `cascade-notify serve --support` at `/support`.

Server-rendered HTML (Jinja2, the optional extra `support`), no script: a search box,
a delivery's timeline, and the operator's view (rates, times, failures, spend,
breakers, with inline SVG charts). Operators may open and close breakers from it.
`auth` holds who may look; see docs/support.md.
"""

from cascade_notify.support.app import SupportApp
from cascade_notify.support.auth import (
    AGENT_TOKEN_ENV,
    ROLES,
    TOKEN_ENV,
    AccessDenied,
    Auth,
    Grant,
    Role,
    SupportError,
    SupportRequest,
    bearer_auth,
    env_auth,
)

__all__ = [
    "AGENT_TOKEN_ENV",
    "ROLES",
    "TOKEN_ENV",
    "AccessDenied",
    "Auth",
    "Grant",
    "Role",
    "SupportApp",
    "SupportError",
    "SupportRequest",
    "bearer_auth",
    "env_auth",
]
