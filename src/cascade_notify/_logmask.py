"""What a log line may show: addresses masked, secrets never.

`mask_address()` is the one masking function for a recipient's address wherever a log
line, an error or an emulator's echo names one: a phone number keeps its first four and
last four digits (`+7916***4567`), an e-mail address its first letter and its domain
(`a***@example.com`), anything else (a chat id, a user id) its two ends.

`SecretFilter` is a `logging.Filter` that rewrites a record's text (its message with
the arguments, a traceback, a stack) so that no secret and no full address is left:

- every secret a provider registered (`register_secrets()`: each `SecretStr` of its
  settings, as given and as it appears in a URL) becomes `<secret>`;
- a bot token in a URL path (`/bot<token>`, Telegram's scheme) becomes `/bot<token>`;
- the value of a query key that carries a credential (SMS.ru `api_id`, SMSC `psw`, VK
  `access_token`, `token`, `password`, `key`, `signature`…) becomes `***`;
- an `Authorization` header's value, and an SMTP `AUTH` line's argument, become `***`;
- phone numbers and e-mail addresses in free text are masked as `mask_address()` does.

`install()` puts the one filter (`SECRET_FILTER`) on the library's own loggers
(`cascade_notify.*`, made by `logger()`) and on those of the libraries the providers
and emulators talk through (httpx, httpcore, aiohttp, python-telegram-bot, aiosmtplib,
aiosmtpd, uvicorn). A logger's filters see only the records made on that very logger,
so each is named; `install()` also covers those already made under those roots, and
every provider's constructor calls it again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

from pydantic import BaseModel, SecretStr

_EMAIL: Final = re.compile(r"(?<![\w.+-])([\w][\w.+-]*)@([\w-]+(?:\.[\w-]+)+)")
# E.164 with a plus from 8 digits, or bare from 11 (a country code and a national number;
# a ten-digit Unix time stays readable); a longer run of digits is no phone number
_PHONE: Final = re.compile(r"(?<![\w+*])(\+\d{8,15}|\d{11,15})(?![\d*])")
_BOT_TOKEN: Final = re.compile(r"/bot[0-9]{1,20}(?::|%3[Aa])[A-Za-z0-9_-]+")
#: Query keys (and form fields) whose value is a credential, whatever the provider.
SECRET_KEYS: Final = (
    "access_token",
    "api_id",
    "api_key",
    "apikey",
    "auth_token",
    "client_secret",
    "key",
    "password",
    "psw",
    "secret",
    "sig",
    "signature",
    "token",
)
_QUERY_SECRET: Final = re.compile(
    r"(?i)((?:^|[?&;\s\"'])(?:" + "|".join(SECRET_KEYS) + r")=)[^&\s\"'<>]+"
)
_AUTHORIZATION: Final = re.compile(
    r"(?i)(authorization['\"]?\s*[:=,]\s*b?['\"]?)(?:(bearer|basic|token|oauth)\s+)?[^\s'\",}\]]+"
)
_SMTP_AUTH: Final = re.compile(r"(?i)(\bAUTH\s+(?:PLAIN|LOGIN|XOAUTH2|CRAM-MD5)\b\s*)[^\s'\"]*")


def mask_phone(phone: str) -> str:
    """`+79161234567` as `+7916***4567`: the first four and last four digits kept."""
    plus = "+" if phone.startswith("+") else ""
    digits = phone[len(plus) :]
    if len(digits) <= 8:
        return plus + digits[:2] + "***"
    return f"{plus}{digits[:4]}***{digits[-4:]}"


def mask_email(email: str) -> str:
    """`anna@example.com` as `a***@example.com`: the first letter and the domain kept."""
    local, at, domain = email.rpartition("@")
    if not at:
        return mask_address(email)
    return f"{local[:1]}***@{domain}"


def mask_address(address: str | None) -> str:
    """A recipient's address as a log line may show it: a phone number or an e-mail
    address masked (see the module's docstring), any other id with only its ends."""
    if not address:
        return ""
    if "@" in address:
        return mask_email(address)
    bare = address.replace(" ", "").replace("-", "")
    if re.fullmatch(r"\+?\d{7,15}", bare):
        return mask_phone(bare)
    if len(address) <= 6:
        return "***"
    return f"{address[:2]}***{address[-2:]}"


def redact_addresses(text: str) -> str:
    """`text` with every phone number and e-mail address in it masked."""
    if "@" in text:
        text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    return _PHONE.sub(lambda m: mask_phone(m.group(1)), text)


class SecretFilter(logging.Filter):
    """Rewrites a record so that no registered secret, credential or full address is
    left in its text (the message with its arguments, a traceback, a stack)."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._longest_first: list[str] = []

    def add(self, *secrets: str) -> None:
        """Never show these (and their URL-encoded forms)."""
        for secret in secrets:
            if len(secret) < 4:  # a two-letter secret would mask every word it is in
                continue
            self._secrets.update({secret, quote(secret, safe=""), quote_plus(secret)})
        self._longest_first = sorted(self._secrets, key=len, reverse=True)

    def mask(self, text: str) -> str:
        """`text` with no secret, no credential and no full address left."""
        return redact_addresses(self.hide_secrets(text))

    def hide_secrets(self, text: str) -> str:
        """`text` with no registered secret and no credential left (addresses kept)."""
        # masking, not verifying: no decision rests on the search, so its timing leaks nothing
        for known in self._longest_first:
            if text.find(known) >= 0:
                text = text.replace(known, "<secret>")
        text = _BOT_TOKEN.sub("/bot<token>", text)
        if "=" in text:
            text = _QUERY_SECRET.sub(r"\1***", text)
        lowered = text.lower()
        if "authorization" in lowered:
            text = _AUTHORIZATION.sub(lambda m: m.group(1) + (m.group(2) or "") + " ***", text)
        if "auth" in lowered:
            text = _SMTP_AUTH.sub(r"\1***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot format: leave it to the handler's error path
            return True
        masked = self.mask(message)
        if masked != message:  # else the template and its arguments stay (for grouping)
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


SECRET_FILTER: Final = SecretFilter()

#: Loggers of the libraries below the providers and emulators whose records can carry a
#: request URL, a header or an SMTP command (httpx logs each request's URL at INFO, PTB
#: its base URL at DEBUG, aiosmtpd every command line at DEBUG).
MASKED_LOGGERS: Final = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "aiohttp",
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "telegram",
    "telegram.Bot",
    "telegram.request",
    "telegram.request.BaseRequest",
    "telegram.request.HTTPXRequest",
    "telegram.ext",
    "telegram.ext.ExtBot",
    "telegram.ext.Application",
    "telegram.ext.Updater",
    "aiosmtplib",
    "mail.log",
    "mail.debug",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
    "cascade_notify",
)
_MASKED_ROOTS: Final = frozenset(
    ("httpx", "httpcore", "aiohttp", "telegram", "aiosmtplib", "mail", "uvicorn", "cascade_notify")
)


def install() -> SecretFilter:
    """Put `SECRET_FILTER` on every logger named in `MASKED_LOGGERS` and every logger
    made so far under their roots (idempotent, cheap enough to call at each start)."""
    names = set(MASKED_LOGGERS)
    names.update(
        name
        for name in list(logging.root.manager.loggerDict)
        if name.split(".", 1)[0] in _MASKED_ROOTS
    )
    for name in names:
        _filtered(logging.getLogger(name))
    return SECRET_FILTER


def _filtered(target: logging.Logger) -> logging.Logger:
    if not any(present is SECRET_FILTER for present in target.filters):
        target.addFilter(SECRET_FILTER)
    return target


def logger(name: str) -> logging.Logger:
    """The library's logger `name` (under `cascade_notify`), with `SECRET_FILTER` on it."""
    return _filtered(logging.getLogger(name))


def secrets_of(settings: BaseModel) -> list[str]:
    """Every `SecretStr` value in `settings`, nested models and collections included."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            found.append(secret)
            if "://" in secret:
                found.extend(_url_parts(secret))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name, None))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item)

    walk(settings)
    return found


def _url_parts(url: str) -> list[str]:
    """The pieces of a secret URL that are secrets on their own, as a log line shows a
    request to it (Bitrix24's `…/rest/1/<token>/method`): its password, its path
    segments and query values of eight characters or more."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    pieces = [parts.password or "", *parts.path.split("/")]
    pieces += [value for _, value in parse_qsl(parts.query)]
    return [piece for piece in pieces if len(piece) >= 8]


def register_secrets(secrets: Iterable[str]) -> SecretFilter:
    """Never log these; and put the filter where it must be (see `install()`)."""
    SECRET_FILTER.add(*secrets)
    return install()


# the names the Telegram provider and its PTB glue were written against
TokenFilter = SecretFilter
TOKEN_FILTER: Final = SECRET_FILTER


def install_token_filter(token: str | None = None) -> SecretFilter:
    """`register_secrets([token])`, or only `install()` without a token."""
    return register_secrets([token] if token else [])


__all__ = [
    "MASKED_LOGGERS",
    "SECRET_FILTER",
    "SECRET_KEYS",
    "TOKEN_FILTER",
    "SecretFilter",
    "TokenFilter",
    "install",
    "install_token_filter",
    "logger",
    "mask_address",
    "mask_email",
    "mask_phone",
    "redact_addresses",
    "register_secrets",
    "secrets_of",
]
