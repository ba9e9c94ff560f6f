"""`python -m benchmarks --quick --only support` on SQLite prints its table (no figure is
asserted: the lead measures on a quiet machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_support_section_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "support", "--stores", "sqlite"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "### support: the support page over 20,000 stored deliveries" in done.stdout
    assert "| sqlite" in done.stdout
