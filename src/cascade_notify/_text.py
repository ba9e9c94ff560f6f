"""Text from outside made storable where it enters: the one helper every entry point uses.

A provider's error message and code, its message ids, and every field of a receipt come
from a server we do not control and may hold any characters. Both databases refuse some
(PostgreSQL cannot store NUL; neither can encode a lone surrogate), and a reply of a
megabyte would bloat every row it is copied into. `storable()` escapes what cannot be
stored the way Python writes it (NUL as the four characters `\\x00`, a lone surrogate as
`\\udc80`), so the original stays readable, and cuts what is over the limit, saying how
much was cut. It is idempotent: what it returns it returns unchanged, so a value stored
and read back (and built into a `Receipt` again) stays equal.
"""

from __future__ import annotations

import math
from typing import Final, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Longest provider message id, receipt id or echoed attempt id kept (characters).
ID_LIMIT: Final = 256
#: Longest receipt id kept: room for a message id and its status (`<id>:delivered`).
RECEIPT_ID_LIMIT: Final = ID_LIMIT + 16
#: Longest error code kept.
CODE_LIMIT: Final = 128
#: Longest error text kept.
TEXT_LIMIT: Final = 2000


@overload
def storable(value: None, limit: int) -> None: ...
@overload
def storable(value: object, limit: int) -> str: ...
def storable(value: object, limit: int) -> str | None:
    """`value` as text both stores can hold: None stays None, anything else becomes `str`,
    NUL and lone surrogates escaped, at most `limit` characters."""
    if value is None:
        return None
    text = value if type(value) is str else str(value)
    if len(text) <= limit and "\x00" not in text:
        if text.isascii():
            return text
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return text
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if len(text) > limit:
        cut = len(text) - limit
        for _ in range(3):  # the marker's own length changes how much is cut
            marker = f"…[{cut} more]"
            cut = len(text) - (limit - len(marker))
        text = text[: limit - len(marker)] + marker if len(marker) < limit else text[:limit]
    return text


def finite(value: float | None, *, low: float = 0.0, high: float = math.inf) -> float | None:
    """`value` if it is a finite number within [low, high], clamped into it if finite
    and out of it; None if it is None or not a finite number."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    return min(max(number, low), high)


def plain(value: str) -> bool:
    """Whether `value` holds no NUL and no lone surrogate (both stores can hold it as is)."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def masked_url(url: str) -> str:
    """`url` as an error message may show it: the password and every query value (where
    tokens and signatures travel) as `***`, no fragment."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<a URL that cannot be read>"
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    masked = urlencode([(key, "***") for key, _ in query], safe="*")
    if parts.query and not query:
        masked = "***"
    return urlunsplit((parts.scheme, netloc, parts.path, masked, ""))
