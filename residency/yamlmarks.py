"""Safe, bounded YAML loading that remembers where every value came from.

A policy file is data that compliance officers edit and review, so the loader
accepts plain data and nothing else, within fixed bounds. It works on the
*event* stream of the YAML parser (libyaml when PyYAML has it) and builds plain
Python values itself, without PyYAML's recursive composer and constructor:

* **Encoding.** UTF-8 only (a UTF-8 BOM is fine). Another encoding, a byte that
  is not UTF-8, and a character YAML forbids (NUL and other control characters,
  as in a binary file) are refused with their line and column.
* **Tags.** Only the YAML core schema's tags (``!!str``, ``!!int``, ``!!float``,
  ``!!bool``, ``!!null``, ``!!seq``, ``!!map``) are accepted; every other tag
  (``!!python/...``, ``!include``, ``!!binary``, ``!!set``, ``%TAG`` shorthands)
  is refused with its line, on scalars, sequences and mappings alike. Nothing is
  ever constructed from a tag, so nothing can execute.
* **Anchors and aliases are refused**, not expanded. A policy is small and is
  reviewed as text: a value that lives elsewhere makes a reviewer chase it, and
  an error about it could not name one line. Refusing them also makes "billion
  laughs" alias bombs impossible rather than merely bounded.
* **``<<`` merge keys are refused** (they exist to copy anchored mappings).
* **Bounds.** Nesting depth, node count, scalar length and the length of numbers
  are capped (:class:`YamlLimits`), and the parse is iterative, so no input can
  exhaust the stack; with libyaml a 1 MB file parses in well under a second.
* **Duplicate keys**, which ``yaml.safe_load`` silently overwrites, are refused.
* Implicit YAML 1.1 timestamps (``2024-01-01``) stay strings.

Every problem becomes a :class:`~residency.errors.PolicyProblem` with the file,
the line, the field path where known, the offending value (truncated and
escaped) and a fix; the loader raises nothing else.

:meth:`MarkedYaml.line_of` maps any path such as
``("jurisdictions", "EU", "home_regions", 0)`` back to its line, so error messages
can say ``policy.yaml:14``.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from residency.errors import PolicyError, PolicyProblem

__all__ = [
    "MarkedYaml",
    "YamlLimits",
    "decode_policy_bytes",
    "field_path",
    "load_marked_yaml",
    "shown_value",
]

Loc = tuple[str | int, ...]

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_CORE}{t}" for t in ("str", "int", "float", "bool", "null")}
_SEQ_TAG, _MAP_TAG = f"{_CORE}seq", f"{_CORE}map"
_FIX_TAG = (
    "remove the tag: a policy holds plain values only (the YAML core schema's !!str, "
    "!!int, !!float, !!bool, !!null, !!seq and !!map are the only tags allowed)"
)
# The characters YAML allows in a stream (as PyYAML's reader checks them).
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)

try:  # libyaml: fast, iterative, and it caps flow nesting itself
    from yaml import CSafeLoader as _Loader

    HAVE_LIBYAML = True
except ImportError:  # pragma: no cover - PyYAML wheels ship libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

    HAVE_LIBYAML = False


@dataclass(frozen=True)
class YamlLimits:
    """Bounds of what the loader accepts. A real policy is far inside all of them."""

    max_depth: int = 16
    max_nodes: int = 10_000  # a real policy holds a few hundred; 10,000 parse in ~0.3 s
    max_problems: int = 50
    max_scalar_chars: int = 10_000
    max_number_chars: int = 32


DEFAULT_LIMITS = YamlLimits()


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


def shown_value(value: object, limit: int = 60) -> str:
    """A value as it may appear in a message: escaped (``repr``) and at most ~``limit`` chars."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} in all)"
    text = repr(value)
    return text if len(text) <= limit + 2 else text[:limit] + "..."


def field_path(loc: Loc) -> str:
    """A path as a dotted field name; a key a terminal would not show as written
    (control or bidi characters) is escaped, like ``repr`` does, so it cannot spoof."""

    def part(x: str | int) -> str:
        text = str(x)
        return text if text.isprintable() else repr(text)[1:-1]

    return ".".join(part(x) for x in loc) or "(top level)"


_path = field_path


def _line_col(text: str | bytes, index: int) -> tuple[int, int]:
    nl: Any = b"\n" if isinstance(text, bytes) else "\n"
    line = text.count(nl, 0, index) + 1
    col = index - (text.rfind(nl, 0, index) + 1) + 1
    return line, col


def decode_policy_bytes(raw: bytes, *, source: str) -> str:
    """UTF-8 text of a policy file, or a PolicyError naming the line of the first bad byte."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise PolicyError(
                [
                    PolicyProblem(
                        source,
                        1,
                        "(encoding)",
                        f"the file is {name} (it starts with a {name} byte-order mark)",
                        "save the file as UTF-8",
                        shown_value(bom),
                    )
                ]
            )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _line_col(raw, exc.start)
        binary = b"\x00" in raw[:8192]
        what = "a binary file, not YAML text" if binary else "not UTF-8 text"
        raise PolicyError(
            [
                PolicyProblem(
                    source,
                    line,
                    "(encoding)",
                    f"{what}: byte {exc.object[exc.start]:#04x} at column {col} is not UTF-8",
                    "save the file as UTF-8 (a policy is YAML text)",
                    shown_value(raw[exc.start : exc.start + 4]),
                )
            ]
        ) from None
    return text


def _check_characters(text: str, source: str) -> None:
    bad = _NON_PRINTABLE.search(text)
    if bad is None:
        return
    line, col = _line_col(text, bad.start())
    char = bad.group()
    name = "NUL" if char == "\x00" else f"U+{ord(char):04X}"
    raise PolicyError(
        [
            PolicyProblem(
                source,
                line,
                "(encoding)",
                f"control character {name} at column {col} is not allowed in YAML"
                + (" (is this a binary file?)" if char == "\x00" else ""),
                "remove it; write special characters in a double-quoted string as escapes "
                "such as \\t or \\u00e9",
                shown_value(char),
            )
        ]
    )


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag


class _Frame:
    """An open mapping or sequence; for a mapping, the key whose value comes next."""

    __slots__ = ("container", "key", "loc")

    def __init__(self, container: dict[Any, Any] | list[Any], loc: Loc) -> None:
        self.container = container
        self.loc = loc
        # _NO_KEY: a key comes next; _SKIP_KEY: the value of a refused key (parsed, dropped)
        self.key: Any = _NO_KEY


_NO_KEY = object()
_SKIP_KEY = object()


class _Builder:
    """Plain data from YAML events, with the line of every path."""

    def __init__(self, source: str, limits: YamlLimits) -> None:
        self.source = source
        self.limits = limits
        self.out = MarkedYaml(data=None)
        self.stack: list[_Frame] = []
        self.problems: list[PolicyProblem] = []
        self.nodes = 0
        self.done = False
        self.constructor = yaml.constructor.SafeConstructor()
        self.resolver = yaml.resolver.Resolver()

    # --- where are we ---

    def next_loc(self) -> Loc | None:
        """The path of the node that comes next (None: it is a mapping key)."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.container, list):
            return (*top.loc, len(top.container))
        if top.key is _NO_KEY:
            return None
        if top.key is _SKIP_KEY:
            return (*top.loc, "<refused key>")
        return (*top.loc, top.key)

    def where(self) -> str:
        loc = self.next_loc()
        if loc is None:
            return _path(self.stack[-1].loc) if self.stack else "(top level)"
        return _path(loc)

    def fail(self, line: int, message: str, fix: str, value: object = None) -> PolicyError:
        shown = None if value is None else shown_value(value)
        return PolicyError(
            [*self.problems, PolicyProblem(self.source, line, self.where(), message, fix, shown)]
        )

    # --- events ---

    def event(self, ev: yaml.Event) -> None:
        line = ev.start_mark.line + 1 if ev.start_mark else 0
        if isinstance(ev, yaml.AliasEvent):
            raise self.fail(
                line,
                f"alias *{ev.anchor} is not allowed: a policy spells every value out",
                "replace the alias with the value itself (anchors and aliases are refused)",
                f"*{ev.anchor}",
            )
        if isinstance(ev, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            self.node_start(ev, line)
        elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            frame = self.stack.pop()
            self.attach(frame.container, line, scalar=False)

    def node_start(self, ev: Any, line: int) -> None:
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise self.fail(
                line,
                f"the file holds more than {self.limits.max_nodes} values",
                "a policy is small: split it, or remove generated content",
            )
        if ev.anchor is not None:
            raise self.fail(
                line,
                f"anchor &{ev.anchor} is not allowed: a policy spells every value out",
                "remove the anchor and write each value in full (anchors and aliases are refused)",
                f"&{ev.anchor}",
            )
        tag = ev.tag
        loc = self.next_loc()
        if loc is not None:
            self.out.lines.setdefault(loc, line)
        if isinstance(ev, yaml.ScalarEvent):
            self.scalar(ev, line)
            return
        allowed = _SEQ_TAG if isinstance(ev, yaml.SequenceStartEvent) else _MAP_TAG
        if tag not in {None, "!", allowed}:
            raise self.fail(
                line, f"YAML tag {_short_tag(tag)} is not allowed", _FIX_TAG, _short_tag(tag)
            )
        if len(self.stack) >= self.limits.max_depth:
            raise self.fail(
                line,
                f"nesting deeper than {self.limits.max_depth} levels",
                "a policy is at most a few levels deep: flatten the structure",
            )
        container: dict[Any, Any] | list[Any] = (
            [] if isinstance(ev, yaml.SequenceStartEvent) else {}
        )
        self.stack.append(_Frame(container, loc if loc is not None else ("<key>",)))

    def scalar(self, ev: yaml.ScalarEvent, line: int) -> None:
        text: str = ev.value
        if len(text) > self.limits.max_scalar_chars:
            raise self.fail(
                line,
                f"a value of {len(text)} characters (at most {self.limits.max_scalar_chars})",
                "shorten it",
                text,
            )
        given: str | None = ev.tag
        tag: str
        if given is not None and given != "!":
            if given not in _SCALAR_TAGS:
                short = _short_tag(given)
                raise self.fail(line, f"YAML tag {short} is not allowed", _FIX_TAG, short)
            tag = given
        else:
            tag = self.resolver.resolve(yaml.ScalarNode, text, ev.implicit)  # type: ignore[no-untyped-call]
        is_key = bool(self.stack) and self.stack[-1].key is _NO_KEY
        if tag == f"{_CORE}merge" and is_key and isinstance(self.stack[-1].container, dict):
            raise self.fail(
                line,
                "merge keys ('<<') are not supported",
                "write the keys out in full in this mapping",
                text,
            )
        if tag in {f"{_CORE}int", f"{_CORE}float"} and len(text) > self.limits.max_number_chars:
            raise self.fail(
                line,
                f"a number of {len(text)} characters (at most {self.limits.max_number_chars})",
                "write a number in the documented range; see `regionkit policy schema`",
                text,
            )
        value: Any = text
        if tag in _SCALAR_TAGS and tag != f"{_CORE}str":
            node = yaml.ScalarNode(tag, text, None, None, ev.style)
            try:
                value = self.constructor.construct_object(node)
            except Exception:  # a core scalar is built from its text alone: any
                # failure (ValueError, KeyError for '!!bool maybe' ...) means a bad value
                kind = _short_tag(tag)
                raise self.fail(
                    line,
                    f"{text!r} is not a valid {kind.removeprefix('!!')} ({kind})",
                    f"write a valid value or remove the {kind} tag",
                    text,
                ) from None
        self.attach(value, line, scalar=True)

    def attach(self, value: Any, line: int, *, scalar: bool) -> None:
        if not self.stack:
            self.out.data = value
            self.done = True
            return
        top = self.stack[-1]
        if isinstance(top.container, list):
            top.container.append(value)
            return
        if top.key is _NO_KEY:  # this value is a key
            self.add_key(top, value, line, scalar=scalar)
            return
        if top.key is not _SKIP_KEY:
            top.container[top.key] = value
        top.key = _NO_KEY

    def add_key(self, top: _Frame, key: Any, line: int, *, scalar: bool) -> None:
        if len(self.problems) >= self.limits.max_problems:
            raise PolicyError(
                [
                    *self.problems,
                    PolicyProblem(
                        self.source,
                        line,
                        _path(top.loc),
                        f"more than {self.limits.max_problems} problems; stopped reading here",
                        "fix the problems above, then validate again",
                    ),
                ]
            )
        if not scalar or isinstance(key, (dict, list)):
            self.problems.append(
                PolicyProblem(
                    self.source,
                    line,
                    _path(top.loc),
                    "a mapping key must be a scalar",
                    "use a plain name as the key",
                )
            )
            top.key = _SKIP_KEY
            return
        if key in top.container:
            first = self.out.lines.get((*top.loc, key))
            self.problems.append(
                PolicyProblem(
                    self.source,
                    line,
                    _path((*top.loc, key)),
                    f"duplicate key {key!r} (first on line {first})",
                    "remove one of the two; YAML keeps only the last silently",
                    shown_value(key),
                )
            )
            top.key = _SKIP_KEY
            return
        self.out.lines[(*top.loc, key)] = line
        top.key = key


# PyYAML's pure-Python scanner is slow (8 s for 1 MB) and quadratic in flow nesting
# (34 s for 20,000 '['); without libyaml only small, flat files are parsed.
PURE_PYTHON_MAX_CHARS = 100_000
PURE_PYTHON_MAX_BRACKETS = 1_000


def _check_pure_python_bounds(text: str, source: str) -> None:
    brackets = text.count("[") + text.count("{")
    if len(text) > PURE_PYTHON_MAX_CHARS or brackets > PURE_PYTHON_MAX_BRACKETS:
        raise PolicyError(
            [
                PolicyProblem(
                    source,
                    None,
                    "(file)",
                    f"too large to parse safely without libyaml ({len(text):,} characters, "
                    f"{brackets:,} brackets; at most {PURE_PYTHON_MAX_CHARS:,} and "
                    f"{PURE_PYTHON_MAX_BRACKETS:,})",
                    "install PyYAML with its libyaml extension (the PyPI wheels have it)",
                )
            ]
        )


def load_marked_yaml(
    text: str, *, source: str = "<yaml>", limits: YamlLimits = DEFAULT_LIMITS
) -> MarkedYaml:
    """Parse one YAML document of plain data; raise PolicyError for anything else."""
    _check_characters(text, source)
    if not HAVE_LIBYAML:
        _check_pure_python_bounds(text, source)
    builder = _Builder(source, limits)
    try:
        for ev in yaml.parse(text, Loader=_Loader):
            if isinstance(ev, yaml.DocumentStartEvent) and builder.done:
                raise builder.fail(
                    ev.start_mark.line + 1 if ev.start_mark else 0,
                    "a second YAML document ('---') in the file",
                    "keep one policy per file",
                )
            builder.event(ev)
    except PolicyError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        message = f"not valid YAML: {problem}"
        if exc.context and exc.context_mark and exc.problem_mark:
            # e.g. an unclosed '[' is noticed lines later: say where it opened
            message += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        fix = "fix the YAML syntax at that line"
        where = "(yaml)"
        if "'\\t'" in message or "tab" in problem:
            fix = "indent with spaces: YAML does not allow tabs for indentation"
        if "nesting depth" in problem:
            message = f"nesting deeper than the YAML parser allows: {problem}"
            fix = "a policy is at most a few levels deep: flatten the structure"
            where = builder.where()
        raise PolicyError(
            [*builder.problems, PolicyProblem(source, line, where, message, fix)]
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyError(
            [PolicyProblem(source, None, "(yaml)", f"not valid YAML: {exc}", "fix the YAML syntax")]
        ) from None
    if builder.problems:
        raise PolicyError(builder.problems)
    return builder.out
