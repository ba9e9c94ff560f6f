"""`python -m cascade_notify._reference [--check] [--docs DIR]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cascade_notify._reference import COMMAND, render, stale, write
from cascade_notify._reference.policy import undocumented_fields


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Generate docs/reference/ from the models and the CLI."
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a committed page differs from what the code says",
    )
    parser.add_argument(
        "--docs", type=Path, default=Path("docs"), help="the docs directory (default: docs)"
    )
    args = parser.parse_args(argv)
    pages = render()
    for where in undocumented_fields():
        print(f"warning: {where} has no Field(description=...)", file=sys.stderr)
    if args.check:
        old = stale(args.docs, pages)
        if old:
            names = ", ".join(str(args.docs / n) for n in old)
            print(
                f"stale reference: {names} differ from what the code says; "
                f"regenerate with `{COMMAND}` and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"reference up to date: {', '.join(str(args.docs / n) for n in pages)}")
        return 0
    changed = write(args.docs, pages)
    for name in changed:
        print(f"wrote {args.docs / name}")
    if not changed:
        print("reference already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
