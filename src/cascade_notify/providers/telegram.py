"""`type: telegram_bot`: a Telegram bot, sending with python-telegram-bot (PTB).

Out: `send()` is PTB's `Bot.send_message` to the recipient's chat id. PTB builds the
request, parses the answer and raises its own exceptions; its HTTP layer is ours
(`_Request`, a `telegram.request.BaseRequest` over the shared HTTP base: aiohttp by
default, an injected `httpx.AsyncClient` if given), so a send costs what the fastest
sound transport costs, and transport failures are classified by what happened on the
wire. PTB's exceptions become ours in `translate()` alone.

The Bot API gives no delivery receipts: `receipts` is `{sent}` ("accepted"), so a step
waiting for `delivered` or `read` on this type is refused when the policy loads.

In: `receive()` takes the bot's Updates (a webhook set with `setWebhook(url,
secret_token=...)`), checks `X-Telegram-Bot-Api-Secret-Token` in constant time and
turns `/start <payload>` into a `linked` signal carrying the payload as its `token`
(the notifier checks it) and a `my_chat_member` "kicked" into a `gone` one. Anything
else is acknowledged and ignored. `deep_link()` makes `https://t.me/<username>?start=…`.

The token is in every request URL. `TokenFilter`, installed on the `httpx`, `httpcore`,
`aiohttp` and `telegram` loggers by each provider, masks it in their records; error
texts are masked before they leave this module.

python-telegram-bot is the `telegram` extra, imported only when a provider is made:
the settings and `escape()` work without it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal

import httpx
from pydantic import AfterValidator, Field, SecretStr, field_validator

from cascade_notify import _logmask
from cascade_notify._duration import Duration
from cascade_notify.clock import Clock
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
)
from cascade_notify.models import ReceiptStatus, Signal, SignalKind
from cascade_notify.providers._http import (
    Answer,
    HttpClient,
    HttpProvider,
    load_json,
    retry_after,
)
from cascade_notify.providers._logmask import (
    TOKEN_FILTER,
    TokenFilter,
    install_token_filter,
)
from cascade_notify.providers._signing import BadSignature, same, wall_time
from cascade_notify.providers._telegram_ptb import (
    _ptb,
    _request_class,
    translate,
)
from cascade_notify.providers.base import (
    Inbound,
    ProviderOverrides,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
    WithdrawRequest,
)

log = _logmask.logger(__name__)

if TYPE_CHECKING:
    import telegram

DEFAULT_API_URL: Final = "https://api.telegram.org"
#: Telegram's limit on `text`, after entity parsing, in UTF-16 code units.
MAX_TEXT: Final = 4096
SECRET_HEADER: Final = "x-telegram-bot-api-secret-token"  # noqa: S105  (a header name)

ParseMode = Literal["none", "MarkdownV2", "HTML"]
_TOKEN: Final = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{1,100}")
_SECRET: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")
_USERNAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{3,31}")
# a deep-link payload as t.me/<bot>?start=<payload> carries it (Bot API: 1-64 of these)
_PAYLOAD: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MARKDOWN_V2: Final = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")
# statuses PTB gives a class of its own; the rest it lumps into a bare NetworkError


# -- formatting ----------------------------------------------------------------------


def escape(text: str, parse_mode: str | None) -> str:
    """`text` written so that Telegram shows it exactly as given in `parse_mode`.

    MarkdownV2: a backslash before each of `_*[]()~\\`>#+-=|{}.!` and the backslash
    itself; HTML: `&`, `<`, `>` as entities; no parse mode (`None`, `"none"`): as is.
    """
    if parse_mode is None or parse_mode == "none":
        return text
    if parse_mode == "MarkdownV2":
        return _MARKDOWN_V2.sub(r"\\\1", text)
    if parse_mode == "HTML":
        return html.escape(text, quote=False)
    raise ValueError(f"unknown parse_mode {parse_mode!r}; use none, MarkdownV2 or HTML")


def utf16_length(text: str) -> int:
    """The length Telegram measures: UTF-16 code units (an emoji outside the BMP is 2)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


# -- settings ------------------------------------------------------------------------


def _check_token(token: SecretStr) -> SecretStr:
    if not _TOKEN.fullmatch(token.get_secret_value()):
        raise ValueError("a bot token looks like 123456789:AAE… (digits, a colon, then letters)")
    return token


def _check_secret(secret: SecretStr | None) -> SecretStr | None:
    if secret is not None and not _SECRET.fullmatch(secret.get_secret_value()):
        raise ValueError("secret_token must be 1 to 256 of A-Z, a-z, 0-9, _ and -")
    return secret


class TelegramSettings(ProviderSettings):
    """Settings of `type: telegram_bot`."""

    token: Annotated[SecretStr, AfterValidator(_check_token)] = Field(
        description="The bot token from @BotFather (`123456:ABC...`); it is part of every "
        "request URL and masked in logs."
    )
    api_url: str = Field(
        default=DEFAULT_API_URL,
        description="The Bot API server root; requests go to `{api_url}/bot{token}/{method}` "
        "(a local Bot API server, an emulator).",
    )
    timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="How long one API call may take before it counts as a timeout (transient, "
        "or an unknown outcome once the request went out).",
    )
    parse_mode: ParseMode = Field(
        default="none",
        description="The parse mode messages are sent in (`none`: plain text); the message's "
        "own text is escaped for it.",
    )
    secret_token: Annotated[SecretStr | None, AfterValidator(_check_secret)] = Field(
        default=None,
        description="What `setWebhook(secret_token=...)` was given: updates without it in "
        "`X-Telegram-Bot-Api-Secret-Token` are refused. `null`: the bot takes no "
        "webhooks.",
    )
    username: str | None = Field(
        default=None,
        description="The bot's @username (without the @), for its deep links "
        "`https://t.me/<username>?start=...`; once started, the provider learns it "
        "from `getMe` if this is unset.",
    )

    @field_validator("username")
    @classmethod
    def _check_username(cls, name: str | None) -> str | None:
        if name is not None:
            name = name.removeprefix("@")
            if not _USERNAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a bot username (5 to 32 of A-Z a-z 0-9 _)")
        return name

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, url: str) -> str:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"{url!r} is not a URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url.rstrip("/")


_MARKUP_KEYS: Final = frozenset({"inline_keyboard", "keyboard", "remove_keyboard", "force_reply"})


class TelegramOverrides(ProviderOverrides):
    """`Message.overrides["telegram"]` (and a step's `options:`) for `type: telegram_bot`.

    `text` is taken as written in the parse mode in effect (markup you authored); the
    message's own text is plain and escaped for it. `reply_markup` is the Bot API's
    JSON object (`inline_keyboard`, `keyboard`, `remove_keyboard` or `force_reply`).
    """

    parse_mode: ParseMode | None = Field(
        default=None,
        description="The parse mode for this message; an overriding `text` is taken as markup "
        "written in it.",
    )
    disable_notification: bool | None = Field(
        default=None, description="`true`: deliver silently (no sound on the phone)."
    )
    reply_markup: dict[str, Any] | None = Field(
        default=None,
        description="The Bot API's `reply_markup` object, passed on as it is (one of "
        "`inline_keyboard`, `keyboard`, `remove_keyboard`, `force_reply`).",
    )

    @field_validator("reply_markup")
    @classmethod
    def _check_markup(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not (len(value) >= 1 and set(value) <= _MARKUP_KEYS):
            raise ValueError(f"reply_markup takes one of {', '.join(sorted(_MARKUP_KEYS))}")
        return value


# -- the provider ----------------------------------------------------------------------


class TelegramProvider(HttpProvider):
    """`type: telegram_bot`: sends with python-telegram-bot; reads the bot's Updates.

    The provider message id is `"{chat_id}:{message_id}"`: Telegram's `message_id` is
    unique within one chat only.
    """

    type_name = "telegram_bot"
    default_channel = "telegram"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset({ReceiptStatus.SENT})
    withdraws = True
    max_length = MAX_TEXT
    webhook_methods = frozenset({"POST"})
    signals: ClassVar[bool] = True
    link_payload = 64  # the Bot API's limit on `start`
    Settings = TelegramSettings
    Overrides = TelegramOverrides
    settings: TelegramSettings

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        *,
        clock: Clock | None = None,
        client: httpx.AsyncClient | None = None,
        http: HttpClient | None = None,
    ) -> None:
        _ptb()
        super().__init__(name, settings, clock=clock, client=client, http=http)
        token = self.settings.token.get_secret_value()
        install_token_filter(token)
        self._bot: telegram.Bot | None = None
        #: A bot whose `getMe` has not succeeded yet (Telegram was away at start).
        self._unready: telegram.Bot | None = None
        #: Requests on the wire now; a fake clock is not at rest while one is.
        self.in_flight = 0
        self._remove_idle_check: Callable[[], None] | None = None

    @property
    def bot(self) -> telegram.Bot:
        """The PTB `Bot` (after `start()`), on this provider's transport."""
        if self._bot is None:
            raise RuntimeError(f"provider {self.name!r} is not started")
        return self._bot

    def _make_bot(self) -> telegram.Bot:
        telegram = _ptb()
        request = _request_class()(self)
        root = self.settings.api_url
        return telegram.Bot(  # type: ignore[no-any-return]
            self.settings.token.get_secret_value(),
            base_url=lambda token: f"{root}/bot{token}",
            base_file_url=lambda token: f"{root}/file/bot{token}",
            request=request,
            get_updates_request=request,
        )

    async def start(self) -> None:
        """PTB's `Bot.initialize()`: `getMe`, so a wrong token fails the start, saying so.

        Telegram unreachable at start (a network error, a timeout, a 5xx: the outage or
        the block this library exists for) does not keep the notifier from starting:
        the start logs a warning and the first send asks `getMe` again, failing as a
        transient error the cascade moves on from while Telegram stays away.
        """
        install_token_filter()  # loggers made since the constructor ran
        if self._remove_idle_check is None:
            self._remove_idle_check = self.clock.add_idle_check(lambda: self.in_flight == 0)
        try:
            await self._initialize()
        except TransientError as exc:
            log.warning(
                "%s: Telegram unreachable at start (%s); getMe again at first send", self.name, exc,
                extra={"provider": self.name, "channel": self.channel},
            )  # fmt: skip

    async def _initialize(self) -> None:
        if self._bot is not None:
            return
        bot = self._unready or self._make_bot()
        self._unready = bot
        try:
            await bot.initialize()
        except Exception as exc:
            raise translate(exc, provider=self.name) from None
        self._bot, self._unready = bot, None

    async def aclose(self) -> None:
        bot, self._bot = self._bot or self._unready, None
        self._unready = None
        remove, self._remove_idle_check = self._remove_idle_check, None
        if remove is not None:
            remove()
        try:
            if bot is not None:
                await bot.shutdown()
        finally:
            await super().aclose()

    # out

    def refused(self, answer: Answer) -> ProviderError:
        """A status PTB has no class for: 408, 429 and 5xx transient, the rest fail safe."""
        detail = answer.text()
        message = f"HTTP {answer.status}" + (f": {detail}" if detail else "")
        status = answer.status
        if status in (408, 429) or status >= 500:
            wait = retry_after(answer.headers.get("retry-after"), wall_time())
            return TransientError(message, provider=self.name, code=str(status), retry_after=wait)
        return PermanentError(f"unclassified: {message}", provider=self.name, code=str(status))

    def _params(self, request: SendRequest) -> dict[str, Any]:
        overrides = request.overrides
        parse_mode = getattr(overrides, "parse_mode", None) or self.settings.parse_mode
        if overrides.text is not None:
            text = overrides.text  # authored in the parse mode
        else:
            plain = request.message.text
            if utf16_length(plain) > MAX_TEXT:
                raise PermanentError(
                    f"text is {utf16_length(plain)} UTF-16 units; Telegram takes at most "
                    f"{MAX_TEXT}",
                    provider=self.name,
                    code="too_long",
                )
            text = escape(plain, parse_mode)
        params: dict[str, Any] = {"chat_id": request.address, "text": text}
        if parse_mode != "none":
            params["parse_mode"] = parse_mode
        extra: dict[str, Any] = {}
        if isinstance(overrides, TelegramOverrides):
            if overrides.disable_notification is not None:
                params["disable_notification"] = overrides.disable_notification
            if overrides.reply_markup is not None:
                extra["reply_markup"] = overrides.reply_markup
        if extra:
            params["api_kwargs"] = extra
        return params

    async def send(self, request: SendRequest) -> SendResult:
        """`sendMessage` to the chat; its id as `"{chat_id}:{message_id}"`."""
        params = self._params(request)
        if self._bot is None:
            await self._initialize()
        bot = self.bot
        try:
            message = await bot.send_message(**params)
        except Exception as exc:
            raise translate(exc, provider=self.name) from None
        return SendResult(f"{message.chat.id}:{message.message_id}")

    async def withdraw(self, request: WithdrawRequest | str, chat_id: str | None = None) -> bool:
        """`deleteMessage` (of a `WithdrawRequest`, or a `chat_id:message_id`): True if it
        was deleted, False if Telegram no longer has it (or it is too old to delete: 48
        hours in private chats); other errors raise ours."""
        provider_message_id = request if isinstance(request, str) else request.provider_message_id
        chat, _, message_id = provider_message_id.rpartition(":")
        chat = chat_id or chat
        if not chat or not message_id.lstrip("-").isdigit():
            raise ValueError(f"{provider_message_id!r} is not a chat_id:message_id")
        if self._bot is None:
            await self._initialize()
        bot = self.bot
        try:
            return bool(await bot.delete_message(chat_id=chat, message_id=int(message_id)))
        except Exception as exc:
            error = translate(exc, provider=self.name)
        if isinstance(error, PermanentError) and (
            "message to delete not found" in str(error).lower()
            or "message can't be deleted" in str(error).lower()
        ):
            return False
        raise error

    def deep_link(self, payload: str) -> str:
        """`https://t.me/<username>?start=<payload>`: opens the bot; START sends the
        payload back as `/start <payload>`."""
        if not _PAYLOAD.fullmatch(payload):
            raise ValueError("a start payload is 1 to 64 of A-Z a-z 0-9 _ -")
        name = self.settings.username or (self._bot.username if self._bot is not None else None)
        if not name:
            raise ValueError(
                f"provider {self.name!r} does not know its bot's username: set `username:` "
                "(the bot's @name) to make its deep links"
            )
        return f"https://t.me/{name}?start={payload}"

    # in

    async def receive(self, request: WebhookRequest) -> Inbound:
        """An Update, if it carries our secret token (403 otherwise): `/start <payload>` is
        a `linked` signal, the user blocking the bot a `gone` one, the rest nothing."""
        secret = self.settings.secret_token
        if secret is None:
            raise BadSignature(
                "no secret_token is configured: set one here and in setWebhook", status=403
            )
        given = request.headers.get(SECRET_HEADER)
        if given is None or not same(given, secret.get_secret_value()):
            raise BadSignature(f"{SECRET_HEADER} is missing or wrong", status=403)
        try:
            update = load_json(request.body)
        except ValueError as exc:
            raise ValueError(f"the body is not JSON: {exc}") from None
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise ValueError("an Update is a JSON object with an integer update_id")
        signal = self._signal(update)
        return Inbound(signals=(signal,)) if signal is not None else Inbound()

    def _signal(self, update: Mapping[str, Any]) -> Signal | None:
        message = update.get("message")
        if isinstance(message, dict):
            chat = _chat_id(message.get("chat"))
            text = message.get("text")
            if chat is None or not isinstance(text, str):
                return None
            command, _, payload = text.partition(" ")
            if command.split("@", 1)[0] != "/start":
                return None
            payload = payload.strip()
            if not _PAYLOAD.fullmatch(payload):
                return None
            # unverified: anyone can type `/start <anything>`; the notifier checks the token
            return self._make(SignalKind.LINKED, chat, "start", message, token=payload)
        member = update.get("my_chat_member")
        if isinstance(member, dict):
            new = member.get("new_chat_member")
            chat_info = member.get("chat")
            chat = _chat_id(chat_info)
            if chat is None or not isinstance(new, dict) or new.get("status") != "kicked":
                return None
            private = isinstance(chat_info, dict) and chat_info.get("type") == "private"
            return self._make(SignalKind.GONE, chat, "blocked" if private else "kicked", member)
        return None

    def _make(
        self,
        kind: SignalKind,
        chat: str,
        reason: str,
        source: Mapping[str, Any],
        token: str | None = None,
    ) -> Signal:
        date = source.get("date")
        ts = float(date) if isinstance(date, int) and date > 0 else self.clock.now()
        return Signal(
            kind=kind,
            channel=self.channel,
            address=chat,
            provider=self.name,
            reason=reason,
            ts=ts,
            token=token,
        )


def _chat_id(chat: object) -> str | None:
    if not isinstance(chat, dict):
        return None
    value = chat.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


__all__ = [
    "DEFAULT_API_URL",
    "MAX_TEXT",
    "TOKEN_FILTER",
    "TelegramOverrides",
    "TelegramProvider",
    "TelegramSettings",
    "TokenFilter",
    "escape",
    "install_token_filter",
    "translate",
    "utf16_length",
]
