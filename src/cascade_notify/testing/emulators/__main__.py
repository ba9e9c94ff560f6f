"""`python -m cascade_notify.testing.emulators [whatsapp telegram viber]`: serve() from a
shell, until Ctrl-C or SIGTERM (the same as `cascade-notify emulate`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from cascade_notify.testing.emulators._serve import (
    DEFAULT_BASE_PORT,
    DEFAULT_RECEIPTS_URL,
    EMULATORS,
    serve,
)


async def _run(args: argparse.Namespace) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows loops
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serve(
            args.names or None,
            receipts_url=args.receipts_url,
            host=args.host,
            base_port=args.base_port,
        )
    print("emulators stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cascade_notify.testing.emulators")
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(EMULATORS)} (default all)")
    parser.add_argument("--receipts-url", default=DEFAULT_RECEIPTS_URL)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    args = parser.parse_args(argv)
    for name in args.names:
        if name not in EMULATORS:
            parser.error(f"unknown emulator {name!r}; known: {', '.join(EMULATORS)}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args))


if __name__ == "__main__":
    main()
