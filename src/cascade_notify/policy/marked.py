"""The marked loader: plain data from PyYAML's composed tree (SafeLoader), recording where
every key and value sits in the file so each issue can name its line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import yaml

from cascade_notify.policy.schema import Loc

if TYPE_CHECKING:
    from cascade_notify.policy.checks import Check

_TAG: Final = "tag:yaml.org,2002:"
_KEY_TAGS: Final = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_MAX_VALUES: Final = 100_000  # alias expansion ("billion laughs") must not exhaust memory


class _TooLarge(Exception):
    pass


class _Builder:
    """Plain data from a composed YAML tree, recording the mark of every key and value."""

    def __init__(self, loader: yaml.SafeLoader, check: Check) -> None:
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


def read_yaml(text: str, check: Check) -> Any:
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
