"""The learned-order benchmark section's smoke run: it fills the history, times send()
with a fixed and a learned order, and prints its table (no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_learned_run_prints_its_table() -> None:
    """`--quick --only learned --stores sqlite` prints a row with both ways and the cost."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--only", "learned"),
            *("--stores", "sqlite", "--runs", "1"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "### Learned order: µs per `send()` with 100,000 recipients with history" in (
        result.stdout
    )
    [row] = [line for line in result.stdout.splitlines() if line.startswith("| sqlite")]
    assert row.count("µs") == 2 and row.count("%") == 1, row
