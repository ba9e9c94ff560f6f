"""Log lines: structured fields on every record about a delivery, addresses masked, and
no secret written by the library or by the libraries below it, at DEBUG, for every
built-in provider type against its loopback emulator."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from cascade_notify import DeliveryStatus, Message, Notifier, Recipient
from cascade_notify._logmask import SECRET_FILTER, mask_address, mask_email, mask_phone
from cascade_notify.providers.registry import BUILTIN
from cascade_notify.providers.registry import get as provider_class
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import running
from cascade_notify.testing.emulators.smtp import SmtpService
from webhook_harness import serve

PHONE = "+79161234567"
EMAIL = "anna.petrova@example.com"
SMTP_PASSWORD = "smtp-emulator-password-0001"
APP_SECRET = "whsec_" + base64.b64encode(b"the-app-webhook-key-0001").decode()
ADDRESSES = {
    "whatsapp": PHONE,
    "telegram": "123456789",
    "viber": "01234567890A=",
    "max": "5550001",
    "vk": "5550002",
    "sms": PHONE,
    "email": EMAIL,
    "call": PHONE,
    "app": "anna-app-7",
}
# every logger the providers and emulators write through, at DEBUG
DEPENDENCIES = ("httpx", "httpcore", "aiohttp", "telegram", "aiosmtplib", "mail.log", "uvicorn")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class Everything(logging.Handler):
    """Each record as a JSON formatter would write it: the formatted line, the exception
    text, and every field in `extra`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        self.records.append(record)
        self.lines.append(self.format(record) + " " + json.dumps(extra, default=str))


@pytest.fixture
def everything() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *DEPENDENCIES)}
    root.addHandler(handler)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The business's own backend behind `type: webhook`: it takes every message."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    async with serve(_app) as url:
        yield url


def _secrets(settings: dict[str, Any]) -> list[str]:
    """The raw values of the settings the provider type declares as secrets."""
    cls = provider_class(settings["type"]).Settings
    model = cls.model_validate({k: v for k, v in settings.items() if k != "type"})
    found = [
        getattr(model, name).get_secret_value()
        for name in cls.model_fields
        if isinstance(getattr(model, name), SecretStr)
    ]
    if settings["type"] == "bitrix24_call_task":  # the token is the URL's last segment
        found.append(settings["webhook_url"].rstrip("/").rsplit("/", 1)[1])
    if settings["type"] == "twilio_sms":  # as HTTP Basic carries it
        pair = f"{settings['account_sid']}:{settings['auth_token']}".encode()
        found.append(base64.b64encode(pair).decode())
    return found


async def test_every_provider_type_at_debug_logs_no_secret_and_no_full_address(
    fake_clock: FakeClock, everything: Everything, backend: str
) -> None:
    """Each built-in type sends once (receipts back through uvicorn) with every logger
    at DEBUG: no secret, no full phone number and no full e-mail address is in any
    line, exception text or extra field, and each attempt's INFO line has its fields."""
    async with running(receipts_url=None, clock=fake_clock, log=lambda _: None) as emulators:
        smtp = SmtpService(log=lambda _: None, users={"shop": SMTP_PASSWORD})
        await smtp.start()
        try:
            providers: dict[str, dict[str, Any]] = {e.name: e.settings() for e in emulators}
            providers["smtp"] = {**smtp.settings(), "username": "shop", "password": SMTP_PASSWORD}
            providers["app"] = {"type": "webhook", "url": f"{backend}/hook", "secret": APP_SECRET}
            providers["fake"] = {"type": "fake", "channel": "sms", "behavior": "deliver"}
            providers["queue"] = {"type": "call_queue"}
            assert {p["type"] for p in providers.values()} == set(BUILTIN)
            secrets = [s for p in providers.values() for s in _secrets(p)]
            secrets += [  # SMTP AUTH PLAIN and LOGIN carry the password in base64
                base64.b64encode(b"\0shop\0" + SMTP_PASSWORD.encode()).decode(),
                base64.b64encode(SMTP_PASSWORD.encode()).decode(),
            ]
            policy = {
                "default_policy": "fake",
                "providers": providers,
                "policies": {
                    name: {
                        "brakes": {"calls_per_recipient_per_hour": None},
                        "steps": [
                            {
                                "channel": provider_class(p["type"]).default_channel
                                or p.get("channel", "sms"),
                                "providers": [name],
                                "wait_for": "accepted",
                            }
                        ],
                    }
                    for name, p in providers.items()
                },
            }
            notifier = Notifier.from_yaml(json.dumps(policy), clock=fake_clock, store="memory://")
            async with notifier, serve(notifier.asgi_app()) as url:
                for emu in emulators:
                    emu.webhook_url = f"{url}/receipts/{emu.name}"
                anna = Recipient(id="anna", **ADDRESSES)
                sent = [
                    await notifier.send(anna, Message(text="Parcel A-1 is here."), policy=name)
                    for name in providers
                ]
                done = await run_until_final(notifier, fake_clock, [d.id for d in sent])
                await fake_clock.advance(120)  # the receipts that follow an acceptance
        finally:
            await smtp.stop()
    assert {d.status for d in done} == {DeliveryStatus.DELIVERED}, [
        (d.policy, d.status, [a.error for a in d.attempts]) for d in done
    ]
    lines = everything.lines
    assert len(lines) > 50, "the run logged almost nothing at DEBUG"
    leaks = [(secret, line) for line in lines for secret in secrets if secret and secret in line]
    assert leaks == []
    digits = PHONE.lstrip("+")
    full = [line for line in lines if digits in line or EMAIL in line]
    assert full == []
    assert any(mask_phone(PHONE) in line for line in lines)  # masked, not absent
    assert any("AUTH" in line and "***" in line for line in lines)  # the login was logged
    outcomes = [
        r for r in everything.records if r.name == "cascade_notify.engine" and hasattr(r, "outcome")
    ]
    assert {r.provider for r in outcomes} == set(providers)  # type: ignore[attr-defined]
    for record in outcomes:
        assert record.levelno == logging.INFO
        fields = {k: getattr(record, k) for k in ("delivery_id", "step", "channel", "attempt_id")}
        assert all(v is not None for v in fields.values()), fields
    ends = [r for r in everything.records if getattr(r, "status", None) == "delivered"]
    assert {r.delivery_id for r in ends} >= {d.id for d in sent}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("+79161234567", "+7916***4567"),
        ("79161234567", "7916***4567"),
        ("+1 415 555 0100", "+1415***0100"),
        ("anna@example.com", "a***@example.com"),
        ("123456789", "1234***6789"),
        ("01234567890A=", "01***A="),
        ("u42", "***"),
    ],
)
def test_mask_address(address: str, shown: str) -> None:
    """A phone keeps four digits at each end, an e-mail its first letter and domain."""
    assert mask_address(address) == shown


@pytest.mark.parametrize(
    ("line", "hidden", "kept"),
    [
        ("GET https://sms.ru/sms/send?api_id=ABCD-1234&to=79161234567", "ABCD-1234", "api_id=***"),
        ("GET https://smsc.ru/sys/send.php?login=shop&psw=hunter22", "hunter22", "psw=***"),
        ("POST https://api.vk.com/method/x?access_token=vk1.a.xyz&v=5", "vk1.a.xyz", "v=5"),
        ("headers={'Authorization': 'Bearer eyJhbGc.x'}", "eyJhbGc.x", "Bearer ***"),
        ("(b'authorization', b'Basic QUM6dG9rZW4=')", "QUM6dG9rZW4=", "Basic ***"),
        ("AUTH PLAIN AHNob3AAc2VjcmV0", "AHNob3AAc2VjcmV0", "AUTH PLAIN ***"),
        ("POST /bot7000:AAsecret-token/sendMessage", "AAsecret-token", "/bot<token>"),
        ("to anna.petrova@example.com", "anna.petrova@", "a***@example.com"),
    ],
)
def test_filter_masks_credentials_in_dependency_lines(line: str, hidden: str, kept: str) -> None:
    """Credentials a dependency writes (query keys, headers, SMTP AUTH, bot URLs) and
    addresses in free text are masked whatever secret was registered."""
    masked = SECRET_FILTER.mask(line)
    assert hidden not in masked and kept in masked


def test_a_provider_secret_is_masked_in_a_record_of_any_dependency(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Building a provider registers each `SecretStr` of its settings: a record of
    httpx with it in its arguments or its traceback shows `<secret>` instead."""
    provider_class("viber_bot")(
        "v", provider_class("viber_bot").Settings(auth_token="viber-secret-0042", sender_name="A")
    )
    caplog.set_level(logging.DEBUG)
    try:
        raise RuntimeError("refused for viber-secret-0042")
    except RuntimeError:
        logging.getLogger("httpx").exception("request with %s", "token=viber-secret-0042")
    text = caplog.text
    assert "viber-secret-0042" not in text and "<secret>" in text


def test_hide_secrets_keeps_addresses_for_stored_error_texts() -> None:
    """`hide_secrets` (for error texts that are stored) hides credentials and keeps
    addresses; `mask` (for log lines) hides both."""
    line = "chat +79161234567 refused: token=abcdef123"
    assert SECRET_FILTER.hide_secrets(line) == "chat +79161234567 refused: token=***"
    assert SECRET_FILTER.mask(line) == "chat +7916***4567 refused: token=***"


def test_mask_email_keeps_only_the_first_letter() -> None:
    """The local part of an e-mail address is one letter and stars."""
    assert mask_email("b@x.org") == "b***@x.org"
