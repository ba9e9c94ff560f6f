"""`${VAR}` and `${VAR:-default}` in any setting, from the environment (`$${` for a literal)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from cascade_notify.policy.schema import Loc

if TYPE_CHECKING:
    from cascade_notify.policy.checks import Check

_REF: Final = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_REF_BODY: Final = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)


def interpolate(value: Any, loc: Loc, env: Mapping[str, str], check: Check) -> Any:
    if isinstance(value, str):
        return _substitute(value, loc, env, check) if "${" in value else value
    if isinstance(value, Mapping):
        return {k: interpolate(v, (*loc, k), env, check) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [interpolate(v, (*loc, i), env, check) for i, v in enumerate(value)]
    return value


def _substitute(text: str, loc: Loc, env: Mapping[str, str], check: Check) -> str:
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
