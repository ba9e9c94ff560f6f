"""`python -m benchmarks`: every section, one table each, then the targets.

    python -m benchmarks [--quick]
                         [--only engine,http,pending,fallback,receipts,addresses,SECTION...]
                         [--runs 5] [--stores memory,sqlite,postgres] [--pg DSN]
                         [--sizes 10000,100000,1000000] [--concurrency 8,32,64]

Tables go to stdout (Markdown), progress to stderr. `--quick` is the CI smoke
run: small counts, a few runs, well under a minute; no figure is asserted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections.abc import Callable

from benchmarks._common import (
    PG_DEFAULT,
    STORES,
    Options,
    Result,
    Table,
    Target,
    machine,
    pg_reachable,
    say,
)

SECTIONS = (
    "engine",
    "http",
    "pending",
    "fallback",
    "receipts",
    "processes",
    "whatsapp",
    "viber",
    "telegram",
    "email",
    "twilio",
    "smsru",
    "smsc",
    "polling",
    "addresses",
    "bulk",
    "stats",
    "support",
    "routing",
    "outbox",
    "learned",
)


def _section(name: str) -> Callable[[Options], Result]:
    if name == "engine":
        from benchmarks import engine_overhead

        return engine_overhead.run
    if name == "http":
        from benchmarks import over_http

        return over_http.run
    if name == "pending":
        from benchmarks import pending

        return pending.run
    if name == "telegram":
        from benchmarks import telegram

        return telegram.run
    if name == "polling":
        from benchmarks import polling_cost

        return polling_cost.run
    if name in ("whatsapp", "viber", "twilio", "smsru", "smsc"):
        from benchmarks import messengers

        return getattr(messengers, name)  # type: ignore[no-any-return]
    if name == "fallback":
        from benchmarks import fallback

        return fallback.run
    if name == "email":
        from benchmarks import email

        return email.run
    if name == "addresses":
        from benchmarks import addresses

        return addresses.run
    if name == "bulk":
        from benchmarks import bulk

        return bulk.run
    if name == "stats":
        from benchmarks import observe

        return observe.run
    if name == "support":
        from benchmarks import support

        return support.run
    if name == "routing":
        from benchmarks import routing

        return routing.run
    if name == "outbox":
        from benchmarks import outbox

        return outbox.run
    if name == "learned":
        from benchmarks import learned

        return learned.run
    if name == "processes":
        from benchmarks import sqlite_processes

        return sqlite_processes.run
    from benchmarks import receipts

    return receipts.run


def _names(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return names


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(n.replace("_", "")) for n in text.split(",") if n.strip())


def parse(argv: list[str]) -> tuple[Options, tuple[str, ...]]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="CI smoke run: small counts")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these sections ({', '.join(SECTIONS)}); repeatable",
    )
    parser.add_argument("--runs", type=int, help="runs per figure (default 5; quick 2)")
    parser.add_argument("--stores", default=",".join(STORES), help="stores to measure")
    parser.add_argument("--pg", default=PG_DEFAULT, help="PostgreSQL DSN; empty to skip it")
    parser.add_argument("--sizes", help="pending deliveries for section 3 (default 10k,100k,1M)")
    parser.add_argument("--concurrency", help="requests in flight for section 2 (default 8,32,64)")
    args = parser.parse_args(argv)
    only = tuple(n for text in args.only for n in _names(text, SECTIONS, "section")) or SECTIONS
    options = Options(
        quick=args.quick,
        runs=args.runs or (2 if args.quick else 5),
        pg=args.pg,
        stores=_names(args.stores, STORES, "store"),
    )
    if args.sizes:
        options.sizes = _ints(args.sizes)
    elif args.quick:
        options.sizes = (1_000, 5_000)
    if args.concurrency:
        options.concurrency = _ints(args.concurrency)
    elif args.quick:
        options.concurrency = (8,)
    return options, tuple(s for s in SECTIONS if s in only)


def main(argv: list[str] | None = None) -> int:
    options, sections = parse(sys.argv[1:] if argv is None else argv)
    # stopped from outside: unwind, so child processes end and scratch schemas are dropped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if "postgres" in options.stores:
        options.pg_ok = pg_reachable(options.pg)
        if not options.pg_ok:
            say(f"PostgreSQL at {options.pg or '(none)'} is not reachable: its rows are skipped")
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    info = machine(options.pg if options.pg_ok else "")
    print(f"## cascade_notify benchmarks ({'quick' if options.quick else 'full'} run)\n")
    print(f"`{command.strip()}`, {time.strftime('%Y-%m-%d %H:%M %Z')}\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    print(flush=True)
    targets = []
    started = time.monotonic()
    for name in sections:
        say(f"section {name} ...")
        begun = time.monotonic()
        try:
            result = _section(name)(options)
        except Exception as exc:  # one broken section must not cost the others' figures
            traceback.print_exc()
            failed = Table(f"{name}: failed", ["error"])
            failed.add(f"{type(exc).__name__}: {exc}")
            result = Result([failed], [Target(name, "the section ran", "it failed", False)])
        for table in result.tables:
            print(table.render(), flush=True)
        targets.extend(result.targets)
        say(f"section {name} took {time.monotonic() - begun:.0f} s")
    summary = Table("Targets", ["section", "target", "measured", "verdict"])
    for target in targets:
        summary.add(target.section, target.goal, target.measured, target.verdict)
    summary.notes.append(f"Whole run: {time.monotonic() - started:.0f} s.")
    print(summary.render(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
