"""python-telegram-bot for the `telegram_bot` provider: imported when first needed, its
HTTP layer ours (a `BaseRequest` over the shared HTTP base), and its exceptions
translated into ours in `translate()` alone."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.providers._http import (
    Answer,
    form_body,
    load_json,
)
from cascade_notify.providers._logmask import (
    TOKEN_FILTER,
    TokenFilter,
)

if TYPE_CHECKING:
    from telegram.request import BaseRequest

    from cascade_notify.providers.telegram import TelegramProvider

EXTRA_HINT: Final = "pip install 'cascade-notify[telegram]'"
_MAX_TEXT_IN_ERROR: Final = 300
_PTB_STATUSES: Final = frozenset({400, 401, 403, 404, 409})


def _ptb() -> Any:
    """The `telegram` package; ImportError naming the extra if it is not installed."""
    try:
        import telegram
        import telegram.error
        import telegram.request
    except ImportError as exc:
        raise ImportError(
            f"provider type telegram_bot needs python-telegram-bot: {EXTRA_HINT}"
        ) from exc
    return telegram


class _Failure(Exception):
    """Carries one of our errors through PTB (set as a TelegramError's cause)."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


@functools.cache
def _request_class() -> Callable[[TelegramProvider], BaseRequest]:
    """`telegram.request.BaseRequest` over a provider's HTTP base, made on first use."""
    _ptb()
    from telegram.error import NetworkError
    from telegram.request import BaseRequest, RequestData

    class Request(BaseRequest):
        """PTB's HTTP seam on the provider's transport: PTB encodes, parses and maps the
        statuses it knows; a transport failure or a status PTB lumps together comes out
        as a `NetworkError` caused by `_Failure(our error)`."""

        __slots__ = ("_provider",)

        def __init__(self, provider: TelegramProvider) -> None:
            self._provider = provider

        @property
        def read_timeout(self) -> float:
            return self._provider.timeout

        async def initialize(self) -> None:
            pass

        async def shutdown(self) -> None:
            pass

        async def do_request(
            self,
            url: str,
            method: str,
            request_data: RequestData | None = None,
            read_timeout: Any = BaseRequest.DEFAULT_NONE,
            write_timeout: Any = BaseRequest.DEFAULT_NONE,
            connect_timeout: Any = BaseRequest.DEFAULT_NONE,
            pool_timeout: Any = BaseRequest.DEFAULT_NONE,
        ) -> tuple[int, bytes]:
            provider = self._provider
            if request_data is not None and request_data.contains_files:
                error: ProviderError = PermanentError(
                    "file uploads are not supported", code="files"
                )
                raise NetworkError(str(error)) from _Failure(error)
            body = form_body(request_data.json_parameters) if request_data is not None else b""
            provider.in_flight += 1
            try:
                answer = await provider.request(
                    method,
                    url,
                    content=body,
                    headers={"content-type": "application/x-www-form-urlencoded"},
                )
            except ProviderError as exc:
                raise NetworkError(str(exc)) from _Failure(exc)
            finally:
                provider.in_flight -= 1
            if answer.ok or answer.status in _PTB_STATUSES or _has_parameters(answer):
                return answer.status, answer.body
            error = provider.refused(answer)
            raise NetworkError(str(error)) from _Failure(error)

    return Request


def _has_parameters(answer: Answer) -> bool:
    """Whether PTB will raise RetryAfter or ChatMigrated for this answer."""
    if b'"parameters"' not in answer.body:
        return False
    try:
        data = load_json(answer.body)
    except ValueError:
        return False
    parameters = data.get("parameters") if isinstance(data, dict) else None
    return isinstance(parameters, dict) and bool(
        parameters.get("retry_after") or parameters.get("migrate_to_chat_id")
    )


# -- the one translation of PTB's exceptions --------------------------------------------

#: `(description fragment, code, gone)` of 403 and 400 answers that mean this chat cannot
#: be reached (providers.md §2.4), lower case.
_UNREACHABLE: Final = (
    ("bot was blocked by the user", "blocked", "blocked"),
    ("user is deactivated", "deactivated", "deactivated"),
    ("bot can't initiate conversation", "not_started", None),
    ("bot was kicked", "kicked", None),
    ("bot is not a member", "not_member", None),
    ("private chat not found", "chat_not_found", None),
    ("chat not found", "chat_not_found", None),
    ("peer_id_invalid", "peer_id_invalid", None),
)
_BAD_REQUEST: Final = (
    ("message is too long", "too_long"),
    ("message text is empty", "empty"),
    ("can't parse entities", "parse_entities"),
)


def translate(
    exc: BaseException, *, provider: str, mask: TokenFilter = TOKEN_FILTER
) -> ProviderError:
    """The one place a python-telegram-bot exception (or anything PTB let through)
    becomes ours. Texts are masked of tokens and bounded."""
    from telegram import error as tg

    def text(value: object) -> str:
        return mask.hide_secrets(" ".join(str(value).split()))[:_MAX_TEXT_IN_ERROR]

    cause = exc.__cause__
    if isinstance(exc, tg.NetworkError) and isinstance(cause, _Failure):
        ours = cause.error
        ours.provider = provider
        ours.args = (text(ours.args[0] if ours.args else ours),)
        return ours
    message = text(exc)
    if isinstance(exc, tg.RetryAfter):
        return TransientError(
            message, provider=provider, code="429", retry_after=_retry_after_seconds(exc)
        )
    if isinstance(exc, tg.ChatMigrated):
        return PermanentError(
            f"the group is now supergroup {exc.new_chat_id}: send there",
            provider=provider,
            code="migrated",
        )
    if isinstance(exc, tg.Forbidden | tg.BadRequest):
        lowered = message.lower()
        for fragment, code, gone in _UNREACHABLE:
            if fragment in lowered:
                return UnreachableError(message, provider=provider, code=code, gone=gone)
        if isinstance(exc, tg.Forbidden):  # every 403 of the Bot API is about the chat
            return UnreachableError(message, provider=provider, code="forbidden")
        for fragment, code in _BAD_REQUEST:
            if fragment in lowered:
                return PermanentError(message, provider=provider, code=code)
        return PermanentError(message, provider=provider, code="bad_request")
    if isinstance(exc, tg.InvalidToken):
        return PermanentError(
            f"the bot token was refused: {message}",
            provider=provider,
            code="bad_token",
            account=True,
        )
    if isinstance(exc, tg.TimedOut):
        if "not* sent" in message:  # PTB's pool timeout: nothing went out
            return TransientError(message, provider=provider, code="pool")
        return UnknownOutcomeError(message, provider=provider, code="timeout")
    if isinstance(exc, tg.NetworkError) and message.startswith("Unknown error in HTTP"):
        return UnknownOutcomeError(message, provider=provider, code="after_send")
    # Conflict, EndPointNotFound, an unparsable answer, anything else: fail safe
    return PermanentError(
        text(f"unclassified: {type(exc).__name__}: {exc}"), provider=provider, code="unclassified"
    )


def _retry_after_seconds(exc: Any) -> float:
    with warnings.catch_warnings():
        # reading it as int warns (PTB v22.2+) unless PTB_TIMEDELTA is set; we take either
        warnings.simplefilter("ignore", DeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
