"""The benchmark runner's smoke run: it runs and prints its table (no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_engine_run_prints_a_table() -> None:
    """`python -m benchmarks --quick --only engine` on the memory store prints the engine
    table with a figure for the floor and for the memory store, and the targets."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "engine", "--stores", "memory"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "### 1. Engine overhead" in out
    assert "| store " in out and "|---" in out
    rows = [line for line in out.splitlines() if line.startswith(("| floor", "| memory"))]
    assert len(rows) == 2, out
    assert all(any(ch.isdigit() for ch in row) for row in rows), rows
    assert "### Targets" in out


def test_quick_messenger_sections_print_their_tables() -> None:
    """`--quick --only whatsapp,viber` (one run at 8 in flight) prints a table per
    provider with a figure for the library and for bare httpx, and every message
    counted once at the sink."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--only", "whatsapp,viber"),
            *("--runs", "1", "--concurrency", "8"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("whatsapp", "viber"):
        assert f"### {name}: messages/s through" in out
    rows = [line for line in out.splitlines() if line.startswith("| 8 ")]
    assert len(rows) == 4 and all(any(ch.isdigit() for ch in row) for row in rows), out
    assert out.count("none lost, none doubled") == 2, out


def test_quick_sms_sections_print_their_tables() -> None:
    """`--quick --only smsru,polling`: the gateway's table (library and bare httpx, every
    message counted once) and the polling-cost table with its share of a core."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--only", "smsru,polling"),
            *("--runs", "1", "--concurrency", "8"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "### smsru: messages/s through" in out
    assert "none lost, none doubled" in out, out
    assert "### polling: one worker's CPU for 2,000 SMS" in out, out
    assert "| 2,000    | 20 " in out, out
