"""The FastAPI example on one host, as deployed: `uvicorn --workers 2` (send-only web
processes) and a `cascade-notify worker` beside them, all on the default SQLite store.
Sends made through both web processes are delivered."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# no `store:`: the default, sqlite:///cascade.db in the processes' working directory
POLICY = """\
providers:
  sms: {type: fake, channel: sms, receipt_delay: 1s}
policies:
  service:
    steps:
      - {channel: sms, providers: [sms], wait_for: delivered, timeout: 1m}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=30)[1] or ""
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[1] or ""


@pytest.fixture
def one_host(tmp_path: Path) -> Iterator[str]:
    """The web processes and the worker, started in `tmp_path`; yields the base URL."""
    (tmp_path / "cascade.yaml").write_text(POLICY)
    env = {
        **os.environ,
        "CASCADE_POLICY": str(tmp_path / "cascade.yaml"),
        "CASCADE_WORKER": "off",
        "PYTHONUNBUFFERED": "1",
    }
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    web = subprocess.Popen(
        [bin_dir / "uvicorn", "fastapi_app:app", "--app-dir", str(EXAMPLES), "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    worker = subprocess.Popen(
        [bin_dir / "cascade-notify", "worker", "--policy", str(tmp_path / "cascade.yaml")],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert web.poll() is None and worker.poll() is None, "a process ended at start"
            try:
                if httpx.get(f"{url}/receipts/-/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the web processes did not come up"
            time.sleep(0.1)
        yield url
    finally:
        said = {"uvicorn": _stop(web), "worker": _stop(worker)}
        for name, stderr in said.items():
            assert "Traceback" not in stderr, f"{name}:\n{stderr}"
    assert web.returncode == 0 and worker.returncode == 0, said
    assert (tmp_path / "cascade.db").is_file()


def test_sends_through_both_web_processes_are_delivered(one_host: str) -> None:
    """Each send answers with the web process's pid; send until both answered (a new
    connection each time, so the kernel spreads them), then every delivery ends
    delivered, worked by the `cascade-notify worker` beside them."""
    sent: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(set(sent.values())) < 2 or len(sent) < 6:
        assert time.monotonic() < deadline, f"only pids {set(sent.values())} answered"
        answer = httpx.post(
            f"{one_host}/notify",
            # a number each: the SMS brake allows 5 a number an hour
            json={"user_id": f"u{len(sent)}", "sms": f"+7916{len(sent):07d}", "text": "hi"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        sent[answer.json()["delivery_id"]] = answer.json()["pid"]
    pending = set(sent)
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} of {len(sent)} not delivered"
        for delivery_id in sorted(pending):
            state = httpx.get(f"{one_host}/notify/{delivery_id}", timeout=10).json()
            assert state["status"] in ("pending", "delivered"), state
            if state["status"] == "delivered":
                assert state["channel"] == "sms"
                pending.discard(delivery_id)
        time.sleep(0.2)
