"""`cascade-notify serve`: a real process on loopback, shut down gracefully by signal."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from cascade_notify.cli.serve import serve
from webhook_harness import SECRET, receipt, sign

POLICY = """
providers:
  app: {type: webhook, url: "http://127.0.0.1:9/inbox", secret: "${APP_SECRET}"}
policies:
  service:
    steps: [{channel: app, providers: [app], wait_for: read}]
"""
# the command as cli.py will wire it: app.command()(serve)
LAUNCH = (
    "import typer; from cascade_notify.cli.serve import serve; "
    "app = typer.Typer(); app.command()(serve); app()"
)


def command() -> typer.Typer:
    app = typer.Typer()
    app.command()(serve)
    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "cascade.yaml"
    path.write_text(POLICY)
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_takes_receipts_and_shuts_down_gracefully(
    policy_file: Path, sig: signal.Signals
) -> None:
    """The server answers health and signed receipts; on SIGTERM or SIGINT it finishes,
    stops the notifier through the lifespan, and exits."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LAUNCH,
        "--policy",
        str(policy_file),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--graceful-timeout",
        "5",
        env={**os.environ, "APP_SECRET": SECRET},
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    health = await http.get("/receipts/-/health")
                    break
                except httpx.TransportError:
                    assert process.returncode is None and time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            body = receipt("m1", "delivered")
            answer = await http.post(
                "/receipts/app", content=body, headers=sign(SECRET, "w1", body, time.time())
            )
            metrics = await http.get("/-/metrics")
        assert health.status_code == 200
        assert metrics.status_code == 200  # Prometheus text, as its own parser reads it
        unfinished = {
            s.labels["status"]: s.value
            for family in text_string_to_metric_families(metrics.text)
            for s in family.samples
            if s.name == "cascade_notify_deliveries_unfinished"
        }
        assert unfinished == {"scheduled": 0, "pending": 0}
        assert answer.status_code == 200
        process.send_signal(sig)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = stderr.decode()
    assert "Application shutdown complete" in log
    assert "notifier stopped" in log
    # at start it says what it serves, in the one log format (uvicorn's lines too)
    assert f"policy file {policy_file}: policies service (default)" in log  # tmp: no symlinks
    assert re.search(r"store sqlite:////\S+/cascade\.db; worker on", log), log  # absolute
    assert "provider app (webhook, app): POST /receipts/app" in log
    assert "health: GET /receipts/-/health" in log
    assert "metrics: GET /-/metrics" in log
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z]+ [\w.]+: ", line)
               for line in log.splitlines()), log  # fmt: skip
    # a clean shutdown exits 0 on either signal, as `cascade-notify worker` does
    assert process.returncode == 0, log


def test_serve_without_uvicorn_says_how_to_get_it(
    policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the `server` extra the command fails with the pip line to fix it."""
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(command(), ["--policy", str(policy_file)])
    assert result.exit_code == 1
    assert "cascade-notify[server]" in result.output


def test_serve_refuses_a_bad_policy(tmp_path: Path) -> None:
    """A policy with errors is refused with each error before anything listens."""
    path = tmp_path / "bad.yaml"
    path.write_text(POLICY.replace('"${APP_SECRET}"', "whsec_short"))
    result = CliRunner().invoke(command(), ["--policy", str(path)])
    assert result.exit_code == 1
    assert "providers.app.secret" in result.output
