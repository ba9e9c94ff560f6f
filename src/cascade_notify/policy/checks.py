"""One load's checks: every issue with its field path and line, in plain words."""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from cascade_notify.errors import MessageError, PolicyError, PolicyIssue, RegistryError
from cascade_notify.models import Step, WaitFor
from cascade_notify.policy.env import interpolate
from cascade_notify.policy.schema import (
    _CHANNEL,
    Config,
    Loc,
    Policy,
    ProviderConfig,
    RouteEntry,
    _Policy,
    _Refs,
    _Step,
    _Top,
)
from cascade_notify.providers import registry
from cascade_notify.resilience.settings import (
    PROVIDER_KEYS,
    ProviderResilience,
    RetrySettings,
)
from cascade_notify.routing import Rule

_M = TypeVar("_M", bound=BaseModel)

_RECEIPTS: Final = {WaitFor.DELIVERED: "delivery receipts", WaitFor.READ: "read receipts"}
#: The channels a policy's brakes watch (SMS pumping, runaway call cost).
_BRAKED: Final = ("sms", "call")
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


class Check:
    """One load: the issues found so far and where each field sits in the file."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.issues: list[PolicyIssue] = []
        self.warnings: list[PolicyIssue] = []
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
        self.issues.append(self._issue(loc, message, key=key, mark=mark))

    def warn(self, loc: Loc, message: str, *, key: bool = False) -> None:
        """Note something doubtful but not wrong: the file is still used as it is."""
        self.warnings.append(self._issue(loc, message, key=key))

    @staticmethod
    def sorted(issues: Sequence[PolicyIssue]) -> list[PolicyIssue]:
        return sorted(issues, key=lambda i: (i.line is None, i.line or 0, i.column or 0))

    def _issue(
        self, loc: Loc, message: str, *, key: bool = False, mark: yaml.Mark | None = None
    ) -> PolicyIssue:
        if mark is None:
            mark = self.key_marks.get(loc) if key else self.marks.get(loc)
        for i in range(len(loc) - 1, -1, -1):  # a missing field: point at its parent's key
            mark = mark or self.key_marks.get(loc[:i]) or self.marks.get(loc[:i])
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        return PolicyIssue(_dotted(loc), message, self.source, line, column)

    def raise_if_any(self) -> None:
        if self.issues:
            raise PolicyError(self.sorted(self.issues))

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
                nested = len(error["loc"]) > 1  # the keys checked apart sit at the top
                allowed = [*_allowed_keys(model, error["loc"][:-1]), *(() if nested else skip)]
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
        options = self._options(step, loc)
        if options is None:
            return None
        if step.max_segments is not None and step.channel != "sms":
            self.add((*loc, "max_segments"), f"applies to sms steps only, not {step.channel}")
            return None
        self._warn_templates(step, loc)
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
            quiet_wait=quiet is not None and quiet.wait,
            categories=None if step.categories is None else frozenset(step.categories),
            options=options,
            withdraw_superseded=bool(step.withdraw_superseded),
            on_too_long=step.on_too_long,
            max_segments=step.max_segments,
            transliterate=step.transliterate,
            keep_place=step.keep_place,
        )

    def _options(self, step: _Step, loc: Loc) -> dict[str, dict[str, Any]] | None:
        """The step's `options:` per provider, each checked as that provider's overrides."""
        ok = True
        for name, given in step.options.items():
            cfg = self.providers.get(name)
            where: Loc = (*loc, "options", name)
            if name not in step.providers:
                listed = ", ".join(step.providers)
                self.add(where, f"{name!r} is not one of this step's providers ({listed})")
                ok = False
            elif cfg is not None:
                try:
                    cfg.cls.check_overrides(given, channel=step.channel, where="options")
                except MessageError as exc:
                    self.add(where, str(exc))
                    ok = False
        return dict(step.options) if ok else None

    def _warn_templates(self, step: _Step, loc: Loc) -> None:
        """A WhatsApp Cloud step with no template sends free-form text, which Meta takes
        only inside the 24-hour window after the customer last wrote (issue 15)."""
        for i, name in enumerate(step.providers):
            cfg = self.providers.get(name)
            if cfg is None or cfg.type != "whatsapp_cloud":
                continue
            if step.options.get(name, {}).get("template") is None:
                self.warn(
                    (*loc, "providers", i),
                    f"{name!r} (whatsapp_cloud) names no template: free-form text reaches "
                    "only customers who wrote in the last 24 hours (others: code 131047, "
                    f"next step); give options: {{{name}: {{template: NAME}}}}, or one per "
                    "message in Message.overrides['whatsapp']",
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
        if head.withdraw_superseded:  # the policy's default, for steps that do not say
            steps = [
                s
                if s is None or (isinstance(r, Mapping) and "withdraw_superseded" in r)
                else dataclasses.replace(s, withdraw_superseded=True)
                for s, r in zip(steps, raw_steps, strict=True)
            ]
        brakes = head.brakes
        if brakes.allowed_countries is None and home is not None:
            brakes = brakes.model_copy(update={"allowed_countries": [home]})
        braked = [s.channel for s in steps if s is not None and s.channel in _BRAKED]
        if brakes.allowed_countries is None and braked:
            self.warn(
                loc,
                "the SMS-fraud country brake is off: neither sender_country nor "
                f"brakes.allowed_countries is set, so its {' and '.join(braked)} steps send "
                "to any country; set sender_country: (e.g. RU) or brakes.allowed_countries",
                key=True,
            )
        return Policy(
            name,
            head.ttl,
            tuple(s for s in steps if s is not None),
            brakes,
            priority=head.priority,
            respect_quiet_hours=head.respect_quiet_hours,
            order=head.order,
        )

    def config(self, data: Any, env: Mapping[str, str] | None) -> Config:
        if not isinstance(data, Mapping):
            what = "is empty" if data is None else f"must be a mapping, got {_kind(data)}"
            self.add((), f"the policy {what}; it needs providers: and policies:")
            self.raise_if_any()
        data = interpolate(data, (), os.environ if env is None else env, self)
        top = self.validate(_Top, data, (), skip=("providers", "policies", "routes"))
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
        routes = self.routes(data.get("routes"), raw_policies)
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
            default_region=top.default_region,
            warnings=tuple(self.sorted(self.warnings)),
            links=top.links,
            support=top.support,
            routes=routes,
            events=top.events,
        )

    def routes(self, raw: Any, policies: Mapping[str, Any]) -> tuple[Rule, ...]:
        """`routes:` compiled, each checked on its own and naming a defined policy; a route
        an earlier one catches whole is never reached, and said so (a warning: the file
        still works)."""
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.add(("routes",), f"must be a list of {{when: ..., policy: ...}}, got {_kind(raw)}")
            return ()
        rules: list[Rule] = []
        names = ", ".join(policies) or "none"
        for index, item in enumerate(raw):
            entry = self.validate(RouteEntry, item, ("routes", index))
            if entry is None:
                continue
            if entry.policy not in policies:
                close = difflib.get_close_matches(entry.policy, list(policies), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.add(
                    ("routes", index, "policy"),
                    f"{entry.policy!r} is not a policy{hint} (defined: {names})",
                )
            when = {k: v for k, v in entry.when.model_dump().items() if v is not None}
            rule = Rule.compile(index, when, entry.policy)
            earlier = next((r for r in rules if r.covers(rule)), None)
            if earlier is not None:
                what = (
                    "matches every send"
                    if not earlier.tests
                    else "matches every send this one does"
                )
                self.warn(
                    ("routes", index),
                    f"this route can never match: routes[{earlier.route.index}] before it "
                    f"{what} (the first match wins); move it up or drop it",
                )
            rules.append(rule)
        return tuple(rules)
