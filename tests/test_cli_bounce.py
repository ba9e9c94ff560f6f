"""`cascade-notify bounce`: a bounce piped in becomes a failed receipt on the store."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cascade_notify.cli import app

runner = CliRunner()

REPORT = (
    b"From: MAILER-DAEMON@mx.example.net\r\n"
    b"To: notify@shop.example.com\r\n"
    b"Subject: Undelivered Mail\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
    b"\r\n--b1\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"
    b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
    b"Final-Recipient: rfc822; anna@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
    b"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    b"Message-ID: <att1@shop.example.com>\r\n--b1--\r\n"
)


def _policy(tmp_path: Path) -> Path:
    path = tmp_path / "cascade.yaml"
    path.write_text(
        f"""
store: "sqlite:///{tmp_path / "cascade.db"}"
providers:
  mail: {{type: smtp, host: 127.0.0.1, port: 9, tls: none, from_addr: notify@shop.example.com}}
policies:
  p: {{steps: [{{channel: email, providers: [mail], wait_for: accepted}}]}}
"""
    )
    return path


def test_a_piped_bounce_is_recorded(tmp_path: Path) -> None:
    """The report about one of our Message-IDs is recorded (here for a message the store
    does not know yet: kept as an orphan); an ordinary e-mail records nothing."""
    policy = _policy(tmp_path)
    recorded = runner.invoke(app, ["bounce", "-p", str(policy)], input=REPORT)
    assert recorded.exit_code == 0, recorded.output
    assert "failed receipt (5.1.1) recorded" in recorded.output
    plain = runner.invoke(app, ["bounce", "-p", str(policy)], input=b"Subject: hi\r\n\r\nhello\r\n")
    assert plain.exit_code == 0 and "nothing recorded" in plain.output


def test_bounce_names_the_smtp_providers(tmp_path: Path) -> None:
    """A provider that is not smtp, or nothing on stdin, is a clear error, exit 1."""
    policy = _policy(tmp_path)
    wrong = runner.invoke(app, ["bounce", "-p", str(policy), "sms"], input=REPORT)
    assert wrong.exit_code == 1 and "not an smtp provider" in wrong.output
    empty = runner.invoke(app, ["bounce", "-p", str(policy)], input=b"")
    assert empty.exit_code == 1 and "no message on stdin" in empty.output
