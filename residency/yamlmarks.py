"""YAML loading that remembers where every value came from.

PyYAML's composer gives each node a start mark (line, column). We build plain
Python data from the node tree ourselves, so we can

* reject duplicate keys, which ``yaml.safe_load`` silently overwrites, and
* map any path such as ``("jurisdictions", "EU", "home_regions", 0)`` back to
  its line, so error messages can say ``policy.yaml:14``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from residency.errors import PolicyError, PolicyProblem

__all__ = ["MarkedYaml", "load_marked_yaml"]

Loc = tuple[str | int, ...]


@dataclass
class MarkedYaml:
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc``, or of its nearest ancestor that exists in the file."""
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return self.lines[loc[:n]]
        return None


def load_marked_yaml(text: str, *, source: str = "<yaml>") -> MarkedYaml:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = f"not valid YAML: {exc.problem or exc}"
        if exc.context and exc.context_mark and exc.problem_mark:
            # e.g. an unclosed '[' is noticed lines later: say where it opened
            message += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        fix = "fix the YAML syntax at that line"
        if "'\\t'" in message:
            fix = "indent with spaces: YAML does not allow tabs for indentation"
        raise PolicyError([PolicyProblem(source, line, "(yaml)", message, fix)]) from None
    except yaml.YAMLError as exc:
        raise PolicyError(
            [PolicyProblem(source, None, "(yaml)", f"not valid YAML: {exc}", "fix the YAML syntax")]
        ) from None
    out = MarkedYaml(data=None)
    if node is None:
        out.data = None
        return out
    problems: list[PolicyProblem] = []
    constructor = yaml.SafeLoader("")  # only its scalar resolution is used

    def build(n: yaml.Node, loc: Loc) -> Any:
        out.lines.setdefault(loc, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                key = build(key_node, (*loc, "<key>"))
                if isinstance(key, (dict, list)):
                    problems.append(
                        PolicyProblem(
                            source,
                            key_node.start_mark.line + 1,
                            ".".join(map(str, loc)) or "(top level)",
                            "a mapping key must be a scalar",
                            "use a plain name as the key",
                        )
                    )
                    continue
                if key in result:
                    problems.append(
                        PolicyProblem(
                            source,
                            key_node.start_mark.line + 1,
                            ".".join(map(str, (*loc, key))),
                            f"duplicate key {key!r} (first on line {out.lines[(*loc, key)]})",
                            "remove one of the two; YAML keeps only the last silently",
                        )
                    )
                    continue
                out.lines[(*loc, key)] = key_node.start_mark.line + 1
                result[key] = build(value_node, (*loc, key))
            return result
        if isinstance(n, yaml.SequenceNode):
            items = []
            for i, item in enumerate(n.value):
                out.lines[(*loc, i)] = item.start_mark.line + 1
                items.append(build(item, (*loc, i)))
            return items
        return constructor.construct_object(n, deep=True)

    out.data = build(node, ())
    if problems:
        raise PolicyError(problems)
    return out
