"""Cascade policy files: YAML in, a validated `Config` out.

Loading is safe (PyYAML's SafeLoader composes the tree; only plain data is
built from it) and strict: syntax errors, duplicate keys, unknown keys, bad
values, undefined providers, channel and receipt mismatches and missing
environment variables are all collected, each with its field path and line,
and the file is refused with one `PolicyError` listing every one of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cascade_notify.errors import PolicyError, PolicyIssue
from cascade_notify.policy.checks import Check
from cascade_notify.policy.marked import read_yaml
from cascade_notify.policy.schema import (
    DEFAULT_STORE,
    Config,
    EventsSettings,
    LinkSettings,
    Policy,
    ProviderConfig,
    SupportSettings,
    WorkerSettings,
)


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
        check = Check(None)
        return check.config(read_yaml(source, check), env)
    path = Path(source)
    check = Check(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError([PolicyIssue("", f"cannot read it: {reason}", check.source)]) from exc
    return check.config(read_yaml(text, check), env)


def load_config_data(
    data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str | None = None
) -> Config:
    """Validate an already-parsed policy mapping (its issues carry no line numbers)."""
    return Check(source).config(data, env)


__all__ = [
    "DEFAULT_STORE",
    "Config",
    "EventsSettings",
    "LinkSettings",
    "Policy",
    "ProviderConfig",
    "SupportSettings",
    "WorkerSettings",
    "load_config",
    "load_config_data",
]
