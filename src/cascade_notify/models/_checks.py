"""What every text from a caller must be before a store takes it: bounded, and free of
NUL and lone surrogates; metadata plain JSON. The same answer on every store."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from collections.abc import Mapping
from typing import Any, Final

from cascade_notify._text import plain
from cascade_notify.errors import MessageError, RecipientError

#: Longest recipient id, or idempotency key, taken (characters).
ID_KEY_LIMIT: Final = 256
#: Longest address on one channel.
ADDRESS_LIMIT: Final = 1024
_SHORT_LIMIT = 64  # a locale, region, time zone, category or channel name
_MAX_DEPTH = 32  # nesting of metadata and overrides
# an integral float this large is stored by PostgreSQL (jsonb: numeric) as its digits,
# which read back as an int that is not equal to it: kept as that int from the start
_EXACT_FLOAT = 2.0**53


def _refuse(error: type[RecipientError | MessageError], field_name: str, problem: str) -> Exception:
    if error is RecipientError:
        return RecipientError(field_name, problem)
    return MessageError(f"Message.{field_name}: {problem}", field=field_name.split("[")[0])


def _check_text(
    value: str,
    field_name: str,
    limit: int | None,
    error: type[RecipientError | MessageError],
) -> None:
    """Refuse text no store can hold as is (NUL, a lone surrogate), or over `limit`."""
    if limit is not None and len(value) > limit:
        raise _refuse(error, field_name, f"is {len(value)} characters; at most {limit}")
    if not plain(value):
        what = "a NUL character" if "\x00" in value else "a lone surrogate (not Unicode text)"
        raise _refuse(error, field_name, f"holds {what}")


def _plain_json(value: object, path: str, depth: int = 0) -> Any:
    """`value` as the plain JSON data every store keeps and gives back equal (tuples as
    lists, mappings as dicts); MessageError naming the place of anything else."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        _check_text(value, path, None, MessageError)
        return value
    if isinstance(value, int):
        if abs(value).bit_length() > 1000:  # Python prints at most 4300 digits
            raise _refuse(MessageError, path, "is an integer too large to store")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _refuse(MessageError, path, f"{value!r} is not a JSON number")
        if abs(value) >= _EXACT_FLOAT and value.is_integer():
            return int(value)
        return float(value)
    if depth >= _MAX_DEPTH:
        raise _refuse(MessageError, path, f"is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, Mapping):
        plain_map: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _refuse(MessageError, path, f"key {key!r} is not a string")
            _check_text(key, f"{path}[{key!r}]", None, MessageError)
            plain_map[key] = _plain_json(item, f"{path}[{key!r}]", depth + 1)
        return plain_map
    if isinstance(value, list | tuple):
        return [_plain_json(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise _refuse(
        MessageError, path, f"a {type(value).__name__} is not plain JSON (str, number, list, dict)"
    )


def check_idempotency_key(key: object) -> None:
    """Refuse an idempotency key no store can hold the same way: MessageError naming it."""
    if key is None:
        return
    if not isinstance(key, str) or not key:
        raise MessageError("idempotency_key: must be a non-empty string", field="idempotency_key")
    if len(key) > ID_KEY_LIMIT:
        raise MessageError(
            f"idempotency_key: is {len(key)} characters; at most {ID_KEY_LIMIT}",
            field="idempotency_key",
        )
    if not plain(key):
        raise MessageError(
            "idempotency_key: holds a NUL character or a lone surrogate", field="idempotency_key"
        )


def strict_init(cls: type[Any], error: type[RecipientError | MessageError]) -> None:
    """Make `cls(...)` (a keyword-only dataclass) refuse an unknown or missing field with
    `error` naming it and the fields there are, instead of a bare TypeError."""
    generated = cls.__init__
    names = [f.name for f in dataclasses.fields(cls)]
    known = frozenset(names)
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    title = cls.__name__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if args:
            raise _refuse(
                error,
                names[0] if len(args) == 1 else "(arguments)",
                f"{title}() takes keyword arguments only, e.g. {title}({names[0]}=...)",
            )
        if not known.issuperset(kwargs):
            field_name = next(k for k in kwargs if k not in known)
            close = difflib.get_close_matches(field_name, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise _refuse(
                error, field_name, f"is not a {title} field; {hint}(fields: {', '.join(names)})"
            )
        for name in required:
            if name not in kwargs:
                raise _refuse(error, name, "is required but missing")
        generated(self, **kwargs)

    functools.update_wrapper(__init__, generated)
    cls.__init__ = __init__
