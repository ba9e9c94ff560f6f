"""Cascade policy files: YAML in, a validated `Config` out.

Loading is safe (PyYAML's SafeLoader composes the tree; only plain data is
built from it) and strict: syntax errors, duplicate keys, unknown keys, bad
values, undefined providers, channel and receipt mismatches and missing
environment variables are all collected, each with its field path and line,
and the file is refused with one `PolicyError` listing every one of them.
"""

from __future__ import annotations

import builtins
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, TypeVar, get_args

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from cascade_notify._duration import Duration
from cascade_notify.errors import PolicyError, PolicyIssue, RegistryError
from cascade_notify.models import Step, WaitFor
from cascade_notify.providers import registry
from cascade_notify.providers.base import Provider, ProviderSettings
from cascade_notify.resilience.settings import (
    DEFAULT_BRAKES,
    DEFAULT_BREAKER,
    PROVIDER_KEYS,
    BrakeSettings,
    BreakerSettings,
    Country,
    ProviderResilience,
    RateLimitSettings,
    RetrySettings,
)

Loc = tuple[str | int, ...]
_M = TypeVar("_M", bound=BaseModel)

_CHANNEL: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_HHMM: Final = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_REF: Final = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_REF_BODY: Final = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)
_TAG: Final = "tag:yaml.org,2002:"
_KEY_TAGS: Final = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_MAX_VALUES: Final = 100_000  # alias expansion ("billion laughs") must not exhaust memory
_RECEIPTS: Final = {WaitFor.DELIVERED: "delivery receipts", WaitFor.READ: "read receipts"}
_NOUNS: Final = {"steps": "step", "providers": "provider", "categories": "category"}
_EXPECTED: Final = {
    "string": "text",
    "int": "a whole number",
    "int_from_float": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
}


def _channel_name(value: str) -> str:
    if not _CHANNEL.match(value):
        raise ValueError(
            f"{value!r} is not a channel name (a lower-case letter, then up to 31 "
            "lower-case letters, digits or _)"
        )
    return value


def _minutes(value: object) -> int:
    if isinstance(value, str) and (match := _HHMM.match(value.strip())):
        return int(match[1]) * 60 + int(match[2])
    raise ValueError(f'{value!r} is not a time of day; write HH:MM, e.g. "22:00"')


_Channel = Annotated[str, AfterValidator(_channel_name)]
_Minutes = Annotated[int, BeforeValidator(_minutes)]


#: The store a policy without `store:` gets: an SQLite file beside the process.
DEFAULT_STORE: Final = "sqlite:///cascade.db"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _QuietHours(_Strict):
    start: _Minutes
    end: _Minutes


class _Refs(BaseModel):
    """What a step refers to, read on its own so a typo elsewhere in the step hides nothing."""

    channel: _Channel
    providers: list[str] = Field(min_length=1)
    wait_for: WaitFor = WaitFor.DELIVERED


class _Step(_Refs):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: Duration = Field(default=600.0, gt=0)
    retry: RetrySettings = RetrySettings()
    quiet_hours: _QuietHours | None = None
    categories: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)


class _Policy(_Strict):
    ttl: Duration = Field(default=86400.0, gt=0)
    brakes: BrakeSettings = BrakeSettings()


class WorkerSettings(_Strict):
    """How a worker leases due deliveries: lease length (seconds), parallel sends, batch size."""

    lease: Duration = Field(default=30.0, gt=0)
    concurrency: int = Field(default=100, ge=1)
    batch: int = Field(default=100, ge=1)


class _Top(_Strict):
    store: str = Field(default=DEFAULT_STORE, min_length=1)
    default_policy: str | None = None
    worker: WorkerSettings = WorkerSettings()
    sender_country: Country | None = None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One entry under `providers:`: its class, its validated settings and its channel,
    and the library's resilience settings for it (`breaker` None: no automatic tripping)."""

    name: str
    type: str
    cls: builtins.type[Provider]
    settings: ProviderSettings
    channel: str
    breaker: BreakerSettings | None = DEFAULT_BREAKER
    rate_limit: RateLimitSettings | None = None
    retry: RetrySettings | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """A named cascade: its time to live in seconds, its resolved steps, and the brakes
    on its sms and call steps."""

    name: str
    ttl: float
    steps: tuple[Step, ...]
    brakes: BrakeSettings = DEFAULT_BRAKES


@dataclass(frozen=True, slots=True)
class Config:
    """A whole policy file, validated: providers, policies, store URL and worker settings."""

    providers: Mapping[str, ProviderConfig]
    policies: Mapping[str, Policy]
    default_policy: str
    store: str
    source: str | None
    worker: WorkerSettings
    sender_country: str | None = None


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _dig(data: Any, loc: Sequence[str | int]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    names = {dict: "a mapping", list: "a list", bool: "true/false", str: "text"}
    return f"{names.get(type(value), type(value).__name__)} {value!r}"


def _message(error: ErrorDetails, raw: Any) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    given = _dig(raw, error["loc"])
    if kind == "missing":
        return "is required but missing"
    if kind == "value_error":
        return str(ctx["error"])
    if kind in ("greater_than", "greater_than_equal"):
        relation = "greater than" if kind == "greater_than" else "at least"
        return f"must be {relation} {ctx.get('gt', ctx.get('ge')):g}, got {given!r}"
    if kind in ("less_than", "less_than_equal"):
        relation = "less than" if kind == "less_than" else "at most"
        return f"must be {relation} {ctx.get('lt', ctx.get('le')):g}, got {given!r}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        return f"must list at least one {_NOUNS.get(str(error['loc'][-1]), 'item')}"
    if kind in ("enum", "literal_error"):
        return f"must be one of {ctx['expected']}; got {given!r}"
    expected = _EXPECTED.get(kind.removesuffix("_type").removesuffix("_parsing"))
    return f"must be {expected}, got {_kind(given)}" if expected else error["msg"]


def _allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            kinds = (field.annotation, *get_args(field.annotation))
            model = next(
                (t for t in kinds if isinstance(t, type) and issubclass(t, BaseModel)), model
            )
    return list(model.model_fields)


class _Check:
    """One load: the issues found so far and where each field sits in the file."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.issues: list[PolicyIssue] = []
        self.marks: dict[Loc, yaml.Mark] = {}
        self.key_marks: dict[Loc, yaml.Mark] = {}
        self.bad: set[Loc] = set()  # already reported: checks further down keep quiet about them
        self.defined: Mapping[str, Any] = {}
        self.providers: dict[str, ProviderConfig] = {}

    def add(
        self, loc: Loc, message: str, *, key: bool = False, mark: yaml.Mark | None = None
    ) -> None:
        if any(loc[:i] in self.bad for i in range(len(loc) + 1)):
            return
        if mark is None:
            mark = self.key_marks.get(loc) if key else self.marks.get(loc)
        for i in range(len(loc) - 1, -1, -1):  # a missing field: point at its parent's key
            mark = mark or self.key_marks.get(loc[:i]) or self.marks.get(loc[:i])
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        self.issues.append(PolicyIssue(_dotted(loc), message, self.source, line, column))

    def raise_if_any(self) -> None:
        if self.issues:
            raise PolicyError(
                sorted(self.issues, key=lambda i: (i.line is None, i.line or 0, i.column or 0))
            )

    def validate(
        self, model: type[_M], raw: Any, loc: Loc, *, skip: tuple[str, ...] = ()
    ) -> _M | None:
        """`raw` as `model`, reporting every error at its path; keys in `skip` are checked apart."""
        if isinstance(raw, Mapping):
            raw = {k: v for k, v in raw.items() if k not in skip}
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                sub = (*loc, *error["loc"])
                if error["type"] != "extra_forbidden":
                    self.add(sub, _message(error, raw))
                    continue
                key = str(error["loc"][-1])
                allowed = [*_allowed_keys(model, error["loc"][:-1]), *skip]
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.add(
                    sub, f"unknown key {key!r}{hint} (allowed: {', '.join(allowed)})", key=True
                )
            return None

    def mapping(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key)
        if value is not None and not isinstance(value, Mapping):
            self.add((key,), f"must be a mapping of names to definitions, got {_kind(value)}")
        return value if isinstance(value, Mapping) else {}

    def provider(self, name: str, raw: Any) -> ProviderConfig | None:
        loc: Loc = ("providers", name)
        type_name = raw.get("type") if isinstance(raw, Mapping) else None
        known = ", ".join(registry.available())
        if not isinstance(raw, Mapping):
            self.add(loc, f"must be a mapping with type: and settings, got {_kind(raw)}")
            return None
        if not isinstance(type_name, str) or not type_name:
            what = "is required" if type_name is None else f"must be a name, not {_kind(type_name)}"
            self.add((*loc, "type"), f"{what}; known types: {known}")
            return None
        try:
            cls = registry.get(type_name)
        except RegistryError as exc:
            unknown = type_name not in registry.available()
            message = f"unknown provider type {type_name!r}; known types: {known}"
            self.add((*loc, "type"), message if unknown else str(exc))
            return None
        library = {k: raw[k] for k in PROVIDER_KEYS[1:] if k in raw}
        settings = self.validate(cls.Settings, raw, loc, skip=PROVIDER_KEYS)
        extra = self.validate(ProviderResilience, library, loc)
        if settings is None or extra is None:
            return None
        if extra.retry is not None and extra.retry.max_backoff < extra.retry.backoff:
            self.add((*loc, "retry", "max_backoff"), "must not be shorter than backoff")
            return None
        channel = getattr(settings, "channel", None) or cls.default_channel
        if not channel or not _CHANNEL.match(channel):
            what = f"{channel!r} is not a channel name" if channel else "no channel; set channel:"
            self.add((*loc, "channel"), f"{what} (provider type {type_name!r})")
            return None
        return ProviderConfig(
            name, type_name, cls, settings, channel, extra.breaker, extra.rate_limit, extra.retry
        )

    def step(self, raw: Any, loc: Loc, channels: dict[str, int]) -> Step | None:
        step = self.validate(_Step, raw, loc)
        try:
            refs: _Refs = step or _Refs.model_validate(raw)
        except ValidationError:
            return None
        ok = step is not None
        if refs.channel in channels:
            where = f"steps[{channels[refs.channel]}]"
            self.add((*loc, "channel"), f"channel {refs.channel} is already used by {where}")
            ok = False
        channels.setdefault(refs.channel, int(loc[-1]))
        for i, name in enumerate(refs.providers):
            ok = self._step_provider(name, i, refs, loc) and ok
        if step is None or not ok:
            return None
        retry = self._retry(step)
        if retry.max_backoff < retry.backoff:
            self.add((*loc, "retry", "max_backoff"), "must not be shorter than backoff")
            return None
        quiet = step.quiet_hours
        return Step(
            channel=step.channel,
            providers=tuple(step.providers),
            wait_for=step.wait_for,
            timeout=step.timeout,
            retry_attempts=retry.attempts,
            retry_initial=retry.backoff,
            retry_max=retry.max_backoff,
            quiet_hours=None if quiet is None else (quiet.start, quiet.end),
            categories=None if step.categories is None else frozenset(step.categories),
        )

    def _retry(self, step: _Step) -> RetrySettings:
        """The step's own retry keys, and for the rest its first provider's `retry:`."""
        inherited = next(
            (c.retry for n in step.providers if (c := self.providers.get(n)) and c.retry),
            None,
        )
        if inherited is None:
            return step.retry
        return inherited.model_copy(
            update=step.retry.model_dump(include=step.retry.model_fields_set)
        )

    def _step_provider(self, name: str, index: int, refs: _Refs, loc: Loc) -> bool:
        where: Loc = (*loc, "providers", index)
        cfg = self.providers.get(name)
        if name in refs.providers[:index]:
            self.add(where, f"provider {name!r} is listed twice in this step")
        elif name not in self.defined:
            names = ", ".join(self.defined) or "none"
            self.add(where, f"provider {name!r} is not defined under providers: ({names})")
        elif cfg is None:
            pass  # its own definition is broken, and reported there
        elif cfg.channel != refs.channel:
            self.add(
                where,
                f"provider {name!r} sends on {cfg.channel}, "
                f"but this step's channel is {refs.channel}",
            )
        elif not cfg.cls.can_satisfy(refs.wait_for, cfg.settings):
            usable = [w.value for w in WaitFor if cfg.cls.can_satisfy(w, cfg.settings)]
            self.add(
                (*loc, "wait_for"),
                f"provider {name!r} (type {cfg.type}) cannot report {_RECEIPTS[refs.wait_for]}; "
                f"use wait_for: {' or '.join(usable)}",
            )
        else:
            return True
        return False

    def policy(self, name: str, raw: Any, home: str | None = None) -> Policy | None:
        loc: Loc = ("policies", name)
        head = self.validate(_Policy, raw, loc, skip=("steps",))
        if not isinstance(raw, Mapping):
            return None
        raw_steps = raw.get("steps")
        if not raw_steps or not isinstance(raw_steps, list):
            what = "has no steps" if not raw_steps else f"has steps: {_kind(raw_steps)}"
            self.add((*loc, "steps"), f"the policy {what}; list at least one step")
            return None
        channels: dict[str, int] = {}
        steps = [self.step(s, (*loc, "steps", i), channels) for i, s in enumerate(raw_steps)]
        if head is None or None in steps:
            return None
        brakes = head.brakes
        if brakes.allowed_countries is None and home is not None:
            brakes = brakes.model_copy(update={"allowed_countries": [home]})
        return Policy(name, head.ttl, tuple(s for s in steps if s is not None), brakes)

    def config(self, data: Any, env: Mapping[str, str] | None) -> Config:
        if not isinstance(data, Mapping):
            what = "is empty" if data is None else f"must be a mapping, got {_kind(data)}"
            self.add((), f"the policy {what}; it needs providers: and policies:")
            self.raise_if_any()
        data = _interpolate(data, (), os.environ if env is None else env, self)
        top = self.validate(_Top, data, (), skip=("providers", "policies"))
        self.defined = self.mapping(data, "providers")
        for name, raw in self.defined.items():
            if cfg := self.provider(name, raw):
                self.providers[name] = cfg
        raw_policies = self.mapping(data, "policies")
        if not raw_policies:
            self.add(("policies",), "no policies are defined; add at least one under policies:")
        home = top.sender_country if top else None
        policies = {n: p for n, raw in raw_policies.items() if (p := self.policy(n, raw, home))}
        # a mistake elsewhere at the top level leaves `top` None: read default_policy as given
        given = data.get("default_policy")
        default = top.default_policy if top else given if isinstance(given, str) else None
        names = ", ".join(raw_policies) or "none"
        if default is None and len(raw_policies) > 1 and (top is not None or given is None):
            self.add(("default_policy",), f"is required with several policies (defined: {names})")
        elif default is not None and default not in raw_policies:
            self.add(("default_policy",), f"{default!r} is not a policy (defined: {names})")
        self.raise_if_any()
        assert top is not None
        return Config(
            providers=MappingProxyType(self.providers),
            policies=MappingProxyType(policies),
            default_policy=default or next(iter(policies)),
            store=top.store,
            source=self.source,
            worker=top.worker,
            sender_country=top.sender_country,
        )


class _TooLarge(Exception):
    pass


class _Builder:
    """Plain data from a composed YAML tree, recording the mark of every key and value."""

    def __init__(self, loader: yaml.SafeLoader, check: _Check) -> None:
        self.loader = loader
        self.check = check
        self.budget = _MAX_VALUES

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _TooLarge
        self.check.marks[loc] = node.start_mark
        if isinstance(node, yaml.MappingNode) and node.tag == _TAG + "map":
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode) and node.tag == _TAG + "seq":
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode):
            numeric = node.tag in (_TAG + "int", _TAG + "float")
            if numeric and node.style is None and ":" in node.value:
                return node.value  # YAML 1.1 reads 22:00 as 1320 (base 60); keep it as written
            try:
                return self.loader.construct_object(node, deep=True)
            except Exception:  # PyYAML's scalar constructors raise ValueError, KeyError, ...
                if node.tag.startswith(_TAG) and "python" not in node.tag:
                    self._refuse(loc, f"{node.value!r} is not a valid {node.tag[len(_TAG) :]}")
                    return None
        self._refuse(loc, f"the tag {node.tag!r} is not allowed; only plain YAML data is")
        return None

    def _refuse(self, loc: Loc, message: str, mark: yaml.Mark | None = None) -> None:
        self.check.add(loc, message, mark=mark)
        self.check.bad.add(loc)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        result: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                many = isinstance(value_node, yaml.SequenceNode)
                for source in reversed(value_node.value if many else [value_node]):
                    merged = self.build(source, loc)  # the first mapping listed wins
                    if isinstance(merged, dict):
                        result.update(merged)
                    else:
                        self._refuse(loc, "'<<' merges mappings only", source.start_mark)
                self.check.marks[loc] = node.start_mark
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _KEY_TAGS:
                self._refuse(loc, "a key must be a plain name", key_node.start_mark)
                continue
            key, sub = key_node.value, (*loc, key_node.value)  # as written: `no:` stays "no"
            if key in seen:
                message = f"duplicate key {key!r} (first given on line {seen[key]})"
                self.check.add(sub, message, mark=key_node.start_mark)
                continue
            seen[key] = key_node.start_mark.line + 1
            self.check.key_marks[sub] = key_node.start_mark
            result[key] = self.build(value_node, sub)
        return result


def _read_yaml(text: str, check: _Check) -> Any:
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        return None if node is None else _Builder(loader, check).build(node, ())
    except yaml.MarkedYAMLError as exc:
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        check.add((), f"YAML syntax error: {what}", mark=exc.problem_mark or exc.context_mark)
    except yaml.YAMLError as exc:
        check.add((), f"YAML error: {' '.join(str(exc).split())}")
    except _TooLarge:
        check.add((), f"the document expands to more than {_MAX_VALUES} values (aliases?)")
    finally:
        if loader is not None:
            loader.dispose()
    check.raise_if_any()
    return None


def _interpolate(value: Any, loc: Loc, env: Mapping[str, str], check: _Check) -> Any:
    if isinstance(value, str):
        return _substitute(value, loc, env, check) if "${" in value else value
    if isinstance(value, Mapping):
        return {k: _interpolate(v, (*loc, k), env, check) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_interpolate(v, (*loc, i), env, check) for i, v in enumerate(value)]
    return value


def _substitute(text: str, loc: Loc, env: Mapping[str, str], check: _Check) -> str:
    def replace(match: re.Match[str]) -> str:
        if match[0] == "$${":
            return "${"
        ref = _REF_BODY.match(match[1]) if match[1] is not None else None
        if ref is None:
            what = "an unclosed '${'" if match[1] is None else f"'{match[0]}' is not a reference"
            message = f"{what}; write ${{NAME}} or ${{NAME:-default}} ($${{ for a literal ${{)"
        else:
            name, default = ref[1], ref[2]
            found = env.get(name)
            if found is not None and (found or default is None):
                return found
            if default is not None:
                return default
            message = f"environment variable {name} is not set (or write ${{{name}:-default}})"
        check.add(loc, message)
        check.bad.add(loc)
        return ""

    return _REF.sub(replace, text)


def _names_file(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or os.path.isfile(text)


def load_config(source: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Load a policy file, or YAML text, and validate all of it.

    `source` is read as a path when it is a `PathLike`, or a one-line string
    naming an existing file or ending in `.yaml`/`.yml`; any other string is
    YAML text. `${VAR}` and `${VAR:-default}` are taken from `env` (default
    `os.environ`). Raise `PolicyError` listing every problem found.
    """
    if isinstance(source, str) and ("\n" in source or not _names_file(source)):
        check = _Check(None)
        return check.config(_read_yaml(source, check), env)
    path = Path(source)
    check = _Check(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError([PolicyIssue("", f"cannot read it: {reason}", check.source)]) from exc
    return check.config(_read_yaml(text, check), env)


def load_config_data(
    data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str | None = None
) -> Config:
    """Validate an already-parsed policy mapping (its issues carry no line numbers)."""
    return _Check(source).config(data, env)
