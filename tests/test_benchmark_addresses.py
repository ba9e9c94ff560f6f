"""The address-lookup benchmark section's smoke run: it fills the table, times the three
ways and prints its table (no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_address_run_prints_its_table() -> None:
    """`--quick --only addresses --stores sqlite` prints a row with a figure per way."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--only", "addresses"),
            *("--stores", "sqlite", "--runs", "1"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "### Address lookup: µs per `send()` with 10,000 linked recipients" in result.stdout
    [row] = [line for line in result.stdout.splitlines() if line.startswith("| sqlite")]
    assert row.count("µs") == 3 and row.count("%") == 2, row
