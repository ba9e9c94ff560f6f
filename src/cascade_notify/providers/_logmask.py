"""Secrets never in a log line: a filter on the loggers of the libraries providers send
with (httpx, httpcore, aiohttp, python-telegram-bot), which masks a bot token in a URL
(`/bot<token>`) and any secret a provider registered, in the message, its arguments and
a traceback. Any provider whose secret can reach those loggers calls
`install_token_filter(secret)`."""

from __future__ import annotations

import logging
import re
from typing import Final

_URL_TOKEN: Final = re.compile(r"/bot[0-9]{1,20}(?::|%3[Aa])[A-Za-z0-9_-]+")
#: Loggers whose records can carry a request URL (httpx logs each at INFO, PTB its base
#: URL at DEBUG). A logger's filters see only records made on that very logger, so each
#: is named; `install_token_filter` also covers those already made under these roots.
MASKED_LOGGERS: Final = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "aiohttp",
    "aiohttp.client",
    "aiohttp.internal",
    "telegram",
    "telegram.Bot",
    "telegram.request",
    "telegram.request.BaseRequest",
    "telegram.request.HTTPXRequest",
    "telegram.ext",
    "telegram.ext.ExtBot",
    "telegram.ext.Application",
    "telegram.ext.Updater",
)
_MASKED_ROOTS: Final = ("httpx", "httpcore", "aiohttp", "telegram")


class TokenFilter(logging.Filter):
    """Rewrites a record whose text holds a bot token: `/bot<token>` in a URL, or a token
    a provider registered, becomes `<token>` (the message, its arguments, a traceback)."""

    def __init__(self) -> None:
        super().__init__()
        self._tokens: set[str] = set()

    def add(self, token: str) -> None:
        self._tokens.add(token)

    def mask(self, text: str) -> str:
        text = _URL_TOKEN.sub("/bot<token>", text)
        for token in self._tokens:
            if token in text:
                text = text.replace(token, "<token>")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot format: leave it to the handler's error path
            return True
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


TOKEN_FILTER: Final = TokenFilter()


def install_token_filter(token: str | None = None) -> TokenFilter:
    """Put `TOKEN_FILTER` on every logger that may log a request URL (idempotent)."""
    if token:
        TOKEN_FILTER.add(token)
    names = set(MASKED_LOGGERS)
    names.update(
        name
        for name in list(logging.root.manager.loggerDict)
        if name.split(".", 1)[0] in _MASKED_ROOTS
    )
    for name in names:
        logger = logging.getLogger(name)
        if TOKEN_FILTER not in logger.filters:
            logger.addFilter(TOKEN_FILTER)
    return TOKEN_FILTER


__all__ = ["MASKED_LOGGERS", "TOKEN_FILTER", "TokenFilter", "install_token_filter"]
