"""`type: smtp` against a real SMTP server (aiosmtpd on loopback): what arrives, every
refusal → outcome, TLS both ways, the connection pool, and bounces in."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cascade_notify import (
    AttemptStatus,
    DeliveryStatus,
    Message,
    Notifier,
    PermanentError,
    PolicyError,
    ReceiptStatus,
    Recipient,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
    WaitFor,
)
from cascade_notify.policy import load_config
from cascade_notify.providers import registry
from cascade_notify.providers.base import SendRequest
from cascade_notify.providers.email import (
    EmailOverrides,
    SmtpProvider,
    SmtpSettings,
    parse_bounce,
)
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators.smtp import SmtpEmulator
from cascade_notify.testing.plugin import NotifierFactory

ANNA = "anna@example.org"
FROM = "Служба доставки <notify@shop.example.com>"
SECRET = "bounce-s3cret"
HERE = Path(__file__).parent


@pytest.fixture
async def server() -> AsyncIterator[SmtpEmulator]:
    async with SmtpEmulator() as emu:
        yield emu


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (openssl), and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def make(emu: SmtpEmulator, **settings: Any) -> SmtpProvider:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": emu.port,
        "tls": "none",
        "from_addr": FROM,
        "local_hostname": "client.test",
    }
    values.update(settings)
    return SmtpProvider("mail", SmtpSettings(**values))


def request(
    attempt: str = "att1",
    address: str = ANNA,
    text: str = "Ваша посылка A-1234 прибыла в пункт выдачи.",
    subject: str | None = "Посылка A-1234 прибыла",
    **overrides: Any,
) -> SendRequest:
    return SendRequest(
        attempt_id=attempt,
        delivery_id="d1",
        channel="email",
        address=address,
        recipient=Recipient(id="anna", email=address),
        message=Message(text=text, subject=subject),
        overrides=EmailOverrides(**overrides),
    )


@pytest.fixture
async def provider(server: SmtpEmulator) -> AsyncIterator[SmtpProvider]:
    mail = make(server)
    yield mail
    await mail.aclose()


# settings


def test_registered_as_smtp_on_email() -> None:
    """`type: smtp` is built in, sends on `email`, and its port follows `tls`."""
    assert registry.get("smtp") is SmtpProvider
    config = load_config(f"""
providers:
  mail: {{type: smtp, host: smtp.example.com, from_addr: "{FROM}", username: u, password: p}}
  relay: {{type: smtp, host: 127.0.0.1, tls: none, from_addr: a@b.example, pool_size: 2}}
  ssl: {{type: smtp, host: smtp.example.com, tls: implicit, from_addr: a@b.example}}
policies:
  p: {{steps: [{{channel: email, providers: [mail, relay, ssl], wait_for: accepted}}]}}
""")
    ports = {n: p.settings.effective_port for n, p in config.providers.items()}  # type: ignore[attr-defined]
    assert ports == {"mail": 587, "relay": 25, "ssl": 465}
    assert config.providers["mail"].channel == "email"
    assert "'p'" not in repr(config.providers["mail"].settings)


@pytest.mark.parametrize("wait_for", ["delivered", "read"])
def test_waiting_for_more_than_accepted_is_a_policy_error(wait_for: str) -> None:
    """E-mail reports acceptance only: a step waiting for `delivered` or `read` on smtp is
    refused when the policy loads."""
    with pytest.raises(PolicyError, match=r"\(type smtp\) cannot report"):
        load_config(f"""
providers:
  mail: {{type: smtp, host: smtp.example.com, from_addr: a@b.example}}
policies:
  p: {{steps: [{{channel: email, providers: [mail], wait_for: {wait_for}}}]}}
""")
    assert SmtpProvider.can_satisfy(WaitFor.ACCEPTED)
    assert not SmtpProvider.can_satisfy(WaitFor.DELIVERED)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"from_addr": "nobody"}, "not an e-mail address"),
        ({"password": "p"}, "without username"),
        ({"host": "smtp.example.com", "tls": "none", "username": "u", "password": "p"}, "clear"),
        ({"tls": "plain"}, "starttls"),
        ({"pool_size": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any], says: str) -> None:
    """A wrong setting is refused with the reason, before anything is sent."""
    values: dict[str, Any] = {"host": "127.0.0.1", "from_addr": "a@b.example", **settings}
    with pytest.raises(ValueError, match=says):
        SmtpSettings(**values)


# what arrives


async def test_cyrillic_subject_and_body_arrive_intact(
    server: SmtpEmulator, provider: SmtpProvider
) -> None:
    """Subject (RFC 2047), sender's display name and body in Cyrillic come out of the
    received bytes as sent; the Message-ID is the attempt id at our domain, and is the
    provider message id."""
    result = await provider.send(request())
    assert result.provider_message_id == "att1@shop.example.com"
    [got] = server.messages
    assert (got.mail_from, got.rcpt_tos) == ("notify@shop.example.com", (ANNA,))
    assert got.data.isascii()  # 7-bit clean: no 8BITMIME needed
    message = got.message
    assert message["subject"] == "Посылка A-1234 прибыла"
    assert message["from"].addresses[0].display_name == "Служба доставки"
    assert message["to"] == ANNA
    assert message["message-id"] == "<att1@shop.example.com>"
    assert message["auto-submitted"] == "auto-generated"
    assert message["date"] is not None
    assert "list-unsubscribe" not in message
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == "Ваша посылка A-1234 прибыла в пункт выдачи."


async def test_html_alternative(server: SmtpEmulator, provider: SmtpProvider) -> None:
    """overrides["email"]["html"] comes as a text/html alternative beside the plain text."""
    await provider.send(request(html="<p>Ваша <b>посылка</b> прибыла</p>"))
    message = server.messages[0].message
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().strip() == "Ваша посылка A-1234 прибыла в пункт выдачи."
    assert html.get_content().strip() == "<p>Ваша <b>посылка</b> прибыла</p>"


async def test_subject_and_list_unsubscribe(server: SmtpEmulator) -> None:
    """List-Unsubscribe comes from the setting or, over it, the message's override; with no
    subject anywhere, the text's first line is the subject."""
    mail = make(server, list_unsubscribe="<mailto:unsubscribe@shop.example.com>")
    try:
        await mail.send(request("a1", subject=None, text="Заказ готов\nЗаберите его"))
        await mail.send(
            request("a2", list_unsubscribe="<https://shop.example.com/u/anna>", subject="S")
        )
    finally:
        await mail.aclose()
    first, second = (m.message for m in server.messages)
    assert first["subject"] == "Заказ готов"
    assert first["list-unsubscribe"] == "<mailto:unsubscribe@shop.example.com>"
    assert second["list-unsubscribe"] == "<https://shop.example.com/u/anna>"


async def test_header_injection_is_refused(provider: SmtpProvider) -> None:
    """A subject with a line break cannot add headers: permanent, nothing sent."""
    with pytest.raises(PermanentError, match="cannot be written"):
        await provider.send(request(subject="Hi\r\nBcc: all@example.org"))


# refusals → outcomes


@pytest.mark.parametrize(
    ("answer", "error", "code"),
    [
        ("unknown_user", UnreachableError, "5.1.1"),
        ("not_local", UnreachableError, "5.1.6"),
        ("mailbox_full", UnreachableError, "5.2.2"),
        ("bad_mailbox", UnreachableError, "5.1.3"),
        ("policy", PermanentError, "5.7.1"),
        ("greylisted", TransientError, "4.7.1"),
        ("local_error", TransientError, "4.3.0"),
    ],
)
async def test_refusal_at_rcpt(
    server: SmtpEmulator,
    provider: SmtpProvider,
    answer: str,
    error: type[Exception],
    code: str,
) -> None:
    """A recipient refused at RCPT: the outcome by its (enhanced) code, no DATA sent, the
    transaction RSET and the connection kept for the next message."""
    server.script(ANNA, [answer, "deliver"])
    with pytest.raises(error) as caught:
        await provider.send(request())
    assert getattr(caught.value, "code", None) == code
    assert "DATA" not in server.verbs() and server.verbs()[-1] == "RSET"
    await provider.send(request("att2"))
    assert server.connections == 1 and len(server.messages) == 1


@pytest.mark.parametrize(
    ("answer", "error"), [("spam", PermanentError), ("data_busy", TransientError)]
)
async def test_refusal_after_data(
    server: SmtpEmulator, provider: SmtpProvider, answer: str, error: type[Exception]
) -> None:
    """A refusal of the message itself (after DATA) is permanent for 5xx, transient for 4xx."""
    server.script(ANNA, answer)
    with pytest.raises(error):
        await provider.send(request())
    assert "DATA" in server.verbs()


async def test_bad_credentials_open_the_breaker(server: SmtpEmulator) -> None:
    """535 5.7.8 at AUTH is a permanent account error (the breaker opens); good ones send."""
    async with SmtpEmulator(users={"shop": "right"}) as auth:
        wrong = make(auth, username="shop", password="wrong")
        with pytest.raises(PermanentError) as caught:
            await wrong.send(request())
        assert caught.value.account and caught.value.code == "5.7.8"
        right = make(auth, username="shop", password="right")
        await right.send(request())
        assert len(auth.messages) == 1
        await right.aclose()
        await wrong.aclose()


async def test_auth_required_but_not_given_is_an_account_error() -> None:
    """A server that wants AUTH (530 at MAIL) refuses every message: an account error."""
    async with SmtpEmulator(users={"shop": "right"}) as auth:
        mail = make(auth)
        with pytest.raises(PermanentError) as caught:
            await mail.send(request())
        assert caught.value.account and caught.value.code == "5.7.0"
        await mail.aclose()


async def test_no_server_is_transient() -> None:
    """A refused connection is transient: nothing was handed over."""
    emu = SmtpEmulator()
    await emu.start()
    port = emu.port
    await emu.stop()
    mail = SmtpProvider(
        "mail", SmtpSettings(host="127.0.0.1", port=port, tls="none", from_addr="a@b.example")
    )
    with pytest.raises(TransientError):
        await mail.send(request())
    await mail.aclose()


async def test_a_drop_before_data_is_transient_and_the_next_send_reconnects(
    server: SmtpEmulator, provider: SmtpProvider
) -> None:
    """The server hangs up at RCPT: transient; the next send opens a new connection."""
    server.script(ANNA, ["drop", "deliver"])
    with pytest.raises(TransientError):
        await provider.send(request())
    await provider.send(request("att2"))
    assert server.connections == 2 and len(server.messages) == 1


async def test_a_drop_after_data_is_an_unknown_outcome(
    server: SmtpEmulator, provider: SmtpProvider
) -> None:
    """The server read the message and hung up before its 250: the outcome is unknown
    (the message may well be on its way), never "not sent"."""
    server.script(ANNA, "hang_up")
    with pytest.raises(UnknownOutcomeError):
        await provider.send(request())
    assert len(server.messages) == 1 and not server.messages[0].answered


async def test_a_pooled_connection_dropped_while_idle_is_replaced(
    server: SmtpEmulator, provider: SmtpProvider
) -> None:
    """The server closes an idle pooled connection: the next send goes on a new one."""
    await provider.send(request("att1"))
    server.hang_up_all()
    await asyncio.sleep(0.01)
    await provider.send(request("att2"))
    assert server.connections == 2 and len(server.messages) == 2


# TLS


async def test_starttls_with_a_test_certificate(certificate: tuple[Path, Path]) -> None:
    """tls: starttls upgrades the connection and checks the server's certificate against
    ca_file; one that does not verify is a permanent (account) error."""
    async with SmtpEmulator(tls="starttls", tls_context=server_context(certificate)) as emu:
        mail = make(emu, tls="starttls", ca_file=str(certificate[0]))
        await mail.send(request())
        await mail.aclose()
        assert "STARTTLS" in emu.verbs() and len(emu.messages) == 1
        untrusted = make(emu, tls="starttls")  # the system's CAs do not know it
        with pytest.raises(PermanentError) as caught:
            await untrusted.send(request("att2"))
        assert caught.value.account and caught.value.code == "tls"
        await untrusted.aclose()
        unchecked = make(emu, tls="starttls", verify=False)
        await unchecked.send(request("att3"))
        await unchecked.aclose()
    assert len(emu.messages) == 2


async def test_implicit_tls(certificate: tuple[Path, Path]) -> None:
    """tls: implicit speaks TLS from the first byte (port 465 style)."""
    async with SmtpEmulator(tls="implicit", tls_context=server_context(certificate)) as emu:
        mail = make(emu, tls="implicit", ca_file=str(certificate[0]))
        await mail.send(request())
        await mail.aclose()
        assert "STARTTLS" not in emu.verbs() and len(emu.messages) == 1


async def test_starttls_not_offered_is_a_configuration_error(
    server: SmtpEmulator,
) -> None:
    """tls: starttls against a server that does not offer it is refused, not sent in clear."""
    mail = make(server, tls="starttls")
    with pytest.raises(PermanentError) as caught:
        await mail.send(request())
    assert caught.value.account and not server.messages
    await mail.aclose()


# the pool


async def test_connections_are_reused(server: SmtpEmulator) -> None:
    """Many sends at once share at most pool_size connections; all arrive; aclose QUITs."""
    mail = make(server, pool_size=3)
    await asyncio.gather(*(mail.send(request(f"a{i}")) for i in range(30)))
    assert len(server.messages) == 30
    assert server.connections <= 3
    await mail.aclose()
    assert server.verbs().count("QUIT") == server.connections


async def test_a_connection_carries_at_most_max_per_connection(server: SmtpEmulator) -> None:
    """After max_per_connection messages a connection is replaced."""
    mail = make(server, pool_size=1, max_per_connection=2)
    for i in range(5):
        await mail.send(request(f"a{i}"))
    await mail.aclose()
    assert server.connections == 3


# through a notifier


def policy(port: int, retry: str = "{attempts: 3, backoff: 1s}") -> str:
    return f"""
providers:
  mail: {{type: smtp, host: 127.0.0.1, port: {port}, tls: none, from_addr: "{FROM}",
          local_hostname: client.test, bounce_secret: {SECRET}}}
  sms:  {{type: fake, channel: sms, behavior: deliver}}
policies:
  p:
    steps:
      - {{channel: email, providers: [mail], wait_for: accepted, timeout: 10m, retry: {retry}}}
      - {{channel: sms, providers: [sms], wait_for: accepted}}
"""


ANNA_BOTH = Recipient(id="anna", email=ANNA, sms="+79161234567")
PARCEL = Message(text="Ваша посылка прибыла.", subject="Посылка")


def trail(delivery: Any) -> list[tuple[str, str]]:
    return [(a.provider, a.status.value) for a in delivery.attempts]


async def test_refused_recipient_moves_the_cascade_on_at_once(
    server: SmtpEmulator, notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """550 at RCPT: the e-mail attempt is unreachable and the next step runs at once."""
    server.script(ANNA, "unknown_user")
    notifier = await notifier_factory(policy(server.port))
    sent = await notifier.send(ANNA_BOTH, PARCEL)
    [delivery] = await run_until_final(notifier, fake_clock, [sent.id])
    assert delivery.status is DeliveryStatus.DELIVERED and delivery.channel == "sms"
    assert trail(delivery) == [("mail", "unreachable"), ("sms", "delivered")]
    assert delivery.finished_ts == delivery.created_ts
    assert "DATA" not in server.verbs()


async def test_451_is_retried_within_the_step(
    server: SmtpEmulator, notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """451 at RCPT is retried after the step's backoff, on the same provider, and the
    message is accepted on e-mail; the next step never runs."""
    server.script(ANNA, ["local_error", "deliver"])
    notifier = await notifier_factory(policy(server.port))
    sent = await notifier.send(ANNA_BOTH, PARCEL)
    [delivery] = await run_until_final(notifier, fake_clock, [sent.id])
    assert delivery.channel == "email"
    assert trail(delivery) == [("mail", "transient"), ("mail", "accepted")]
    assert 1 <= delivery.finished_ts - delivery.created_ts < 10  # the backoff, with jitter
    assert len(server.messages) == 1


# bounces

DSN = """\
From: MAILER-DAEMON@mx.example.net
To: notify@shop.example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain; charset=utf-8

Your message could not be delivered to anna@example.org.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Arrival-Date: Wed, 01 Jan 2025 00:00:05 +0000

Final-Recipient: rfc822; anna@example.org
Action: {action}
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <anna@example.org>: Recipient address rejected: User unknown

--b1
Content-Type: text/rfc822-headers

Message-ID: <{message_id}>
From: notify@shop.example.com
--b1--
"""


def dsn(message_id: str = "att1@shop.example.com", action: str = "failed") -> bytes:
    return DSN.format(message_id=message_id, action=action).replace("\n", "\r\n").encode()


def test_a_bounce_becomes_a_failed_receipt() -> None:
    """An RFC 3464 report about one of our Message-IDs: failed, with Status and the
    diagnostic, and the attempt id read back from the Message-ID."""
    receipt = parse_bounce(dsn(), provider="mail", domains={"shop.example.com"}, now=5.0)
    assert receipt is not None
    assert (receipt.provider, receipt.provider_message_id) == ("mail", "att1@shop.example.com")
    assert (receipt.status, receipt.code, receipt.attempt_id) == (
        ReceiptStatus.FAILED,
        "5.1.1",
        "att1",
    )
    assert receipt.error is not None and receipt.error.startswith("550 5.1.1 <anna@example.org>")
    assert receipt.ts == 5.0


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (dsn(action="delayed"), "still being retried"),
        (dsn(action="delivered"), "not a failure"),
        (dsn("x1@elsewhere.example"), "not our domain"),
        (b"From: a@b.example\r\nSubject: Out of office\r\n\r\nI am away.\r\n", "not a report"),
    ],
)
def test_what_is_not_our_bounce_gives_no_receipt(raw: bytes, why: str) -> None:
    """A delayed or delivered notice, a report about someone else's message or an ordinary
    e-mail gives no receipt."""
    assert parse_bounce(raw, provider="mail", domains={"shop.example.com"}) is None, why


def test_a_bounce_returning_the_whole_message() -> None:
    """The third part may be the whole original (message/rfc822); Status may be missing,
    then the reply code in Diagnostic-Code stands in."""
    raw = (
        dsn()
        .replace(b"Status: 5.1.1\r\n", b"")
        .replace(b"Content-Type: text/rfc822-headers", b"Content-Type: message/rfc822")
    )
    receipt = parse_bounce(raw, provider="mail")
    assert receipt is not None and receipt.code == "550"
    assert receipt.provider_message_id == "att1@shop.example.com"


async def test_bounce_by_webhook_is_recorded_on_the_attempt(
    server: SmtpEmulator, notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """A bounce POSTed with the bounce secret becomes a failed receipt on the e-mail
    attempt. The step (wait_for: accepted) had already succeeded: the delivery stays
    delivered, and the failure is there to see. A wrong secret changes nothing."""
    notifier = await notifier_factory(policy(server.port))
    sent = await notifier.send(ANNA_BOTH, PARCEL)
    [delivery] = await run_until_final(notifier, fake_clock, [sent.id])
    message_id = delivery.attempts[0].provider_message_id
    assert message_id is not None and delivery.channel == "email"

    async def post(secret: str) -> int:
        answer = await notifier.handle_webhook(
            "mail",
            method="POST",
            url="http://h/receipts/mail",
            headers={"authorization": f"Bearer {secret}", "content-type": "message/rfc822"},
            body=dsn(message_id),
        )
        return answer.status

    assert await post("wrong") == 401
    assert (await notifier.get(sent.id)).attempts[0].receipts == []
    assert await post(SECRET) == 200
    after = await notifier.get(sent.id)
    [receipt] = after.attempts[0].receipts
    assert (receipt.status, receipt.code) == (ReceiptStatus.FAILED, "5.1.1")
    assert after.attempts[0].status is AttemptStatus.FAILED
    assert after.status is DeliveryStatus.DELIVERED


async def test_bounce_moves_a_cascade_still_waiting_on_email(
    server: SmtpEmulator, notifier_factory: NotifierFactory, fake_clock: FakeClock
) -> None:
    """The server hung up after DATA: the e-mail step waits (unknown outcome); a bounce
    about that message fails the step, and the cascade moves to SMS at once."""
    server.script(ANNA, "hang_up")
    notifier = await notifier_factory(policy(server.port))
    sent = await notifier.send(ANNA_BOTH, PARCEL)
    await fake_clock.advance(60)
    waiting = await notifier.get(sent.id)
    assert trail(waiting) == [("mail", "unknown")]
    message_id = server.messages[0].message["message-id"].strip("<>")
    answer = await notifier.handle_webhook(
        "mail",
        method="POST",
        url="http://h/receipts/mail",
        headers={"authorization": f"Bearer {SECRET}"},
        body=dsn(message_id),
    )
    assert answer.status == 200
    [delivery] = await run_until_final(notifier, fake_clock, [sent.id])
    assert trail(delivery) == [("mail", "failed"), ("sms", "delivered")]
    assert delivery.finished_ts == waiting.created_ts + 60


async def test_no_bounce_secret_takes_no_bounces(server: SmtpEmulator) -> None:
    """Without bounce_secret the webhook refuses every request (403)."""
    async with Notifier.from_yaml(
        f"""
providers:
  mail: {{type: smtp, host: 127.0.0.1, port: {server.port}, tls: none, from_addr: a@b.example}}
policies:
  p: {{steps: [{{channel: email, providers: [mail], wait_for: accepted}}]}}
""",
        store="memory://",
    ) as notifier:
        answer = await notifier.handle_webhook(
            "mail", method="POST", url="http://h/r/mail", headers={}, body=dsn()
        )
    assert answer.status == 403
