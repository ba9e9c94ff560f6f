"""docs/emulators.md's first example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs" / "emulators.md"


def test_the_five_minute_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The page's first Python block runs and prints what its comments say."""
    source = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    exec(compile(source, str(DOC), "exec"), {"__name__": "__main__"})  # noqa: S102  (our own docs)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("wamid.")
    assert out[1] == "['sent', 'delivered', 'read']"
