"""The routing benchmark section's smoke run: it times send() with and without ten
routes and prints its table (no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_routing_run_prints_its_table() -> None:
    """`--quick --only routing --stores memory` prints a row with a figure per way."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--only", "routing"),
            *("--stores", "memory", "--runs", "1"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "### Routing: µs per `send()`, no routes against 10 that all miss" in result.stdout
    [row] = [line for line in result.stdout.splitlines() if line.startswith("| memory")]
    assert row.count("µs") == 3 and row.count("%") == 2, row
