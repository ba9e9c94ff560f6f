"""`cascade-notify emulate`: starts the emulators, prints what to paste, stops on SIGTERM."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CLI = Path(sys.executable).parent / "cascade-notify"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_emulate_serves_the_printed_settings_and_stops_cleanly() -> None:
    """The token it prints works against the api_url it prints; SIGTERM stops it, exit 0."""
    port = _free_port()
    child = subprocess.Popen(
        [str(CLI), "emulate", "telegram", "--base-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert child.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("token:" in line for line in lines):
            lines.append(child.stdout.readline())
        text = "".join(lines)
        api_url = re.search(r"api_url (http://\S+)", text)
        token = re.search(r'token: "([^"]+)"', text)
        assert api_url and token, text
        me = httpx.get(f"{api_url[1]}/bot{token[1]}/getMe", timeout=5).json()
        assert me["ok"] and me["result"]["is_bot"]
    finally:
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=30)
    assert child.returncode == 0 and "emulators stopped" in out
