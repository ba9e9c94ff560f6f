"""A pydantic model as Markdown: one table row per field (key, type, default, description),
and one section per nested model, each written once and linked from wherever it is used."""

from __future__ import annotations

import enum
import inspect
import json
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

from pydantic import BaseModel, FilePath, SecretStr
from pydantic.fields import FieldInfo

from cascade_notify._duration import Duration, format_duration
from cascade_notify.policy.schema import _Minutes
from cascade_notify.resilience.settings import Country

#: Annotated aliases named as users know them; matched by their validators' identity.
_ALIASES: tuple[tuple[Any, str], ...] = (
    (Duration, "duration"),
    (Country, "country code"),
    (_Minutes, 'time of day, `"HH:MM"`'),
    (FilePath, "path of an existing file"),
)
_NAMES: Mapping[Any, str] = {
    str: "text",
    int: "whole number",
    float: "number",
    bool: "true or false",
    SecretStr: "secret text",
    Any: "any value",
}
UNDOCUMENTED = "**undocumented**"


@dataclass(frozen=True, slots=True)
class Row:
    """One key of a section's table; `description` None: nobody wrote one."""

    key: str
    type: str
    default: str
    description: str | None


@dataclass(slots=True)
class Section:
    """A heading, what it is about, and its keys."""

    path: str
    intro: str
    rows: list[Row] = field(default_factory=list)
    level: int = 3
    title: str | None = None  # the heading, when it is not the path

    @property
    def anchor(self) -> str:
        return slug(self.heading)

    @property
    def heading(self) -> str:
        return self.title or f"`{self.path}`"


def slug(heading: str) -> str:
    """The id Python-Markdown's toc gives a heading (its default slugify)."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def cell(text: str) -> str:
    """`text` fit for one table cell: one line, pipes escaped, and `<` outside code
    spans written as an entity, so it never opens an HTML tag."""
    parts = " ".join(text.split()).replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def doc(model: type[BaseModel]) -> str:
    """The model's own docstring as one paragraph ("" when it has none of its own)."""
    own = model.__dict__.get("__doc__")
    return " ".join(inspect.cleandoc(own).split()) if isinstance(own, str) else ""


def _metadata(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under `Annotated`, and its metadata with nested `Field()`s opened."""
    meta: list[Any] = []
    while get_origin(annotation) is Annotated:
        annotation, *more = get_args(annotation)
        meta.extend(more)
    flat: list[Any] = []
    for item in meta:
        flat.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    return annotation, flat


def _alias(annotation: Any, metadata: Sequence[Any]) -> str | None:
    for alias, name in _ALIASES:
        base, own = _metadata(alias)
        if own and base == annotation and all(any(m is o for m in metadata) for o in own):
            return name
    return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def models_in(annotation: Any) -> Iterator[tuple[type[BaseModel], str]]:
    """The models an annotation holds, each with the path suffix to reach one
    (`""` itself, `[]` an item of a list, `.NAME` a value of a mapping)."""
    base, _ = _metadata(annotation)
    origin = get_origin(base)
    if _is_model(base):
        yield base, ""
    elif origin in (Union, types.UnionType):
        for arg in get_args(base):
            yield from models_in(arg)
    elif origin in (list, tuple, set, frozenset) or origin is Sequence:
        for arg in get_args(base):
            if arg is not Ellipsis:
                yield from ((m, "[]" + s) for m, s in models_in(arg))
    elif origin in (dict, Mapping):
        yield from ((m, ".NAME" + s) for m, s in models_in(get_args(base)[-1]))


#: Types whose `min_length` counts characters.
_TEXT_TYPES: Final = (str, SecretStr)


def constraints(metadata: Sequence[Any], base: Any, *, duration: bool = False) -> list[str]:
    """The limits a field's metadata puts on its value, in words."""
    texts: list[str] = []
    union = get_origin(base) in (Union, types.UnionType)
    textual = any(t in _TEXT_TYPES for t in (get_args(base) if union else (base,)))
    for item in metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attr, None)
            if value is not None and not isinstance(value, bool):
                shown = format_duration(float(value)) if duration and value else f"{value:g}"
                texts.append(f"{sign} {shown}")
        if (low := getattr(item, "min_length", None)) is not None:
            if textual:
                texts.append("not empty" if low == 1 else f"at least {low} characters")
            else:
                texts.append(f"at least {low} item{'s' if low != 1 else ''}")
        if (high := getattr(item, "max_length", None)) is not None:
            texts.append(f"at most {high} {'characters' if textual else 'items'}")
        if (pattern := getattr(item, "pattern", None)) is not None:
            texts.append(f"matches `{pattern}`")
        if getattr(item, "allow_inf_nan", None) is False:
            texts.append("finite")
    return texts


def type_text(
    annotation: Any, links: Mapping[type[BaseModel], Section], extra: Sequence[Any] = ()
) -> str:
    """How a reader names the type: `duration`, `list of text`, `one of a, b`, a link.
    `extra` is metadata pydantic lifted off the annotation into the field."""
    base, metadata = _metadata(annotation)
    metadata = [*extra, *metadata]
    alias = _alias(base, metadata)
    text = alias or _bare(base, links)
    limits = constraints(metadata, base, duration=alias == "duration")
    return f"{text} ({', '.join(limits)})" if limits else text


def _bare(tp: Any, links: Mapping[type[BaseModel], Section]) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [type_text(a, links) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in args)
    if origin in (list, tuple, set, frozenset) or origin is Sequence:
        items = [a for a in args if a is not Ellipsis]
        item = type_text(items[0], links) if len(set(items)) == 1 else "values"
        return f"list of {item}"
    if origin in (dict, Mapping):
        return f"mapping of {type_text(args[0], links)} to {type_text(args[1], links)}"
    if _is_model(tp):
        section = links.get(tp)
        return f"[mapping](#{section.anchor})" if section else "mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in tp)
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "path"
    if tp in _NAMES:
        return _NAMES[tp]
    return str(getattr(tp, "__name__", tp))


def _value(value: Any, duration: bool) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        return _value(value.value, duration)
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, int | float) and duration:
        return f"`{format_duration(float(value))}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, PurePath):
        return f"`{value.as_posix()}`"
    if isinstance(value, tuple | list | frozenset | set | dict):
        plain = sorted(value) if isinstance(value, set | frozenset) else value
        return f"`{json.dumps(plain, default=str, ensure_ascii=False)}`"
    return f"`{value}`"


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    value = info.default
    if info.default_factory is not None:
        try:
            value = info.get_default(call_default_factory=True)
        except Exception:  # a factory that needs the other fields' values
            return "computed"
    duration = _alias(info.annotation, info.metadata) == "duration" or any(
        _alias(a, m) == "duration" for a, m in (_metadata(x) for x in get_args(info.annotation))
    )
    return _value(value, duration)


def key_of(name: str, info: FieldInfo) -> str:
    return info.alias or name


def rows(model: type[BaseModel], links: Mapping[type[BaseModel], Section]) -> list[Row]:
    """One row per field of `model`, in the model's order."""
    found = []
    for name, info in model.model_fields.items():
        found.append(
            Row(
                key_of(name, info),
                type_text(info.annotation, links, info.metadata),
                default_text(info),
                info.description,
            )
        )
    return found


def undocumented(model: type[BaseModel]) -> list[str]:
    """The fields of `model` that have no description."""
    return [name for name, info in model.model_fields.items() if not info.description]


def table(section_rows: Sequence[Row]) -> str:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for row in section_rows:
        text = cell(row.description) if row.description else UNDOCUMENTED
        lines.append(f"| `{row.key}` | {cell(row.type)} | {cell(row.default)} | {text} |")
    return "\n".join(lines)


__all__ = ["Row", "Section", "doc", "models_in", "rows", "slug", "table", "undocumented"]
