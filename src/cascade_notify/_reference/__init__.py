"""The generated reference: docs/reference/policy.md (every key of a policy file, from
the pydantic models and their field descriptions) and docs/reference/cli.md (every
command of `cascade-notify`, from the typer app).

`python -m cascade_notify._reference` writes both; `--check` writes nothing and fails,
naming the stale pages, when the committed ones differ from what the code says (CI).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cascade_notify._reference import cli, policy

#: Each page, by its path under the docs directory, and what renders it.
PAGES: dict[str, Callable[[], str]] = {
    "reference/policy.md": policy.render,
    "reference/cli.md": cli.render,
}
COMMAND = "python -m cascade_notify._reference"


def render() -> dict[str, str]:
    """Every page's text, by its path under the docs directory."""
    return {name: make() for name, make in PAGES.items()}


def stale(docs: Path, pages: dict[str, str] | None = None) -> list[str]:
    """The pages under `docs` that are missing or differ from `pages` (default: `render()`)."""
    pages = render() if pages is None else pages
    found = []
    for name, text in pages.items():
        path = docs / name
        try:
            current = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            current = None
        if current != text:
            found.append(name)
    return found


def write(docs: Path, pages: dict[str, str] | None = None) -> list[str]:
    """Write the pages that changed under `docs`; return their names."""
    pages = render() if pages is None else pages
    changed = stale(docs, pages)
    for name in changed:
        path = docs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pages[name], encoding="utf-8", newline="\n")
    return changed


__all__ = ["COMMAND", "PAGES", "render", "stale", "write"]
