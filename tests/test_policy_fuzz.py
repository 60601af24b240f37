"""Fuzzing the policy loader: every input is a valid Policy or a PolicyError, in under 2 s.

Two generators, 1,000 examples in all (``REGIONKIT_TEST_FUZZ_EXAMPLES`` changes it):

* YAML text from the grammar: block and flow collections, plain, quoted and block
  scalars, tags (core and others), anchors, aliases, merge keys, directives,
  document markers, comments and odd indentation, spliced into the example policy
  at a random line, or standing alone;
* byte-level mutations of the example policy: flipped, inserted, deleted and
  duplicated bytes, and YAML's special tokens dropped at random offsets.

Nothing may escape as another exception (no UnicodeDecodeError, ConstructorError,
RecursionError, KeyError ...), and no example may take more than 2 s.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from residency.errors import PolicyError, PolicyProblem
from residency.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = (ROOT / "policies" / "social-network.yaml").read_bytes()
MINIMAL = (ROOT / "policies" / "minimal.yaml").read_bytes()
EXAMPLES = int(os.environ.get("REGIONKIT_TEST_FUZZ_EXAMPLES", "1000"))
# CPU seconds one file may cost the loader: a hang or a blow-up, never a slow machine
# (process time does not run while a loaded machine keeps the test waiting).
MAX_SECONDS = 2.0

# --- YAML text from the grammar -------------------------------------------------------
#
# The grammar is walked by a deterministic generator that takes its choices from a byte
# string hypothesis draws in one go: one draw per example keeps generation fast (a draw
# per production made it 30 ms an example), and hypothesis still shrinks the bytes.

WORDS = [
    "eu-west-1",
    "us-east-1",
    "DE",
    "NO",
    "no",
    "yes",
    "on",
    "~",
    "null",
    "true",
    "pk",
    "global",
    "pinned",
    "lww",
    "regions.merges:merge_counters",
    "os:system",
    "regions.merges:nope",
    "1e26",
    "1.0e+26",
    "0x1F",
    "0o17",
    "1_000",
    "1:30",
    "-.inf",
    ".nan",
    "2024-13-45",
    "2024-01-01",
    "=",
    "<<",
    "-",
    "?",
    ":",
    "",
    "\u00e9",
    "\u202e",
    "\t",
    "9" * 5000,
    "-1",
    "0",
    "86401",
    "3651",
    "'quoted'",
    '"dq \\x00 \\u00e9"',
    "|",
    ">-",
    "#",
    "@",
    "`",
    "%",
    "&",
    "*",
    "!",
    "[]",
    "{}",
    "law",
    "regions",
    "countries",
    "data_classes",
    "targets",
    "kind",
    "merge",
    "conflicts",
    "replicas",
    "pii_attributes",
]
TAGS = [
    "!!str",
    "!!int",
    "!!float",
    "!!bool",
    "!!null",
    "!!map",
    "!!seq",
    "!!set",
    "!!omap",
    "!!binary",
    "!!timestamp",
    "!!python/name:os.system",
    "!!python/object/apply:os.system",
    "!include",
    "!",
    "!Ref",
    "!<tag:x,2000:y>",
    "!py!name:os.system",
]
ANCHORS = ["&a", "&b", "&x1"]
ALIASES = ["*a", "*b", "*nowhere"]
EXTRAS = [
    "---",
    "...",
    "%YAML 1.1",
    "%TAG !py! tag:yaml.org,2002:python/",
    "key: |\n  x\n  y",
    "key: >\n folded",
    "? complex\n: value",
    "- - nested",
    "<<: {law: x}",
    "a: &a [*a]",
]


class _Choices:
    def __init__(self, raw: bytes) -> None:
        self.raw, self.i = raw, 0

    def pick(self, n: int) -> int:
        if self.i >= len(self.raw):
            return 0
        self.i += 1
        return self.raw[self.i - 1] % n

    def of(self, items: list[str]) -> str:
        return items[self.pick(len(items))]


def _scalar(c: _Choices) -> str:
    k = c.pick(8)
    if k == 0:
        text = "".join(chr(32 + c.pick(95)) for _ in range(c.pick(12)))
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if k == 1:
        return (
            "'" + "".join(chr(32 + c.pick(95)) for _ in range(c.pick(12))).replace("'", "''") + "'"
        )
    if k == 2:
        return str((c.pick(256) - 128) * 10 ** c.pick(40))
    parts = []
    if c.pick(4) == 0:
        parts.append(c.of(TAGS))
    if c.pick(6) == 0:
        parts.append(c.of(ANCHORS))
    parts.append(c.of(WORDS))
    return " ".join(parts)


def _flow(c: _Choices, depth: int) -> str:
    k = c.pick(6)
    if depth > 4 or k < 3:
        return c.of(ALIASES) if k == 0 and c.pick(3) == 0 else _scalar(c)
    items = [_flow(c, depth + 1) for _ in range(c.pick(4))]
    if k == 3:
        return "[" + ", ".join(items) + "]"
    return "{" + ", ".join(f"{_scalar(c)}: {v}" for v in items) + "}"


def _block(c: _Choices, depth: int) -> str:
    indent = " " * (depth * 2 + (1 if c.pick(8) == 0 else 0))
    lines = []
    for _ in range(1 + c.pick(3)):
        key = _scalar(c) if c.pick(3) else c.of(["<<", "? [a, b]", "law", "regions"])
        k = c.pick(5)
        if k == 0 and depth < 3:
            lines.append(f"{indent}{key}:\n{_block(c, depth + 1)}")
        elif k == 1:
            lines.append(f"{indent}- {_flow(c, 0)}")
        elif k == 2:
            lines.append(c.of(EXTRAS))
        else:
            lines.append(f"{indent}{key}: {_flow(c, 0)}")
    return "\n".join(lines)


@st.composite
def grammar_yaml(draw: st.DrawFn) -> bytes:
    """A YAML fragment from the grammar, alone or spliced into a valid policy."""
    c = _Choices(draw(st.binary(min_size=1, max_size=300)))
    fragment = (_block(c, 0) if c.pick(2) else _flow(c, 0)).encode("utf-8", "surrogatepass")
    base = [b"", EXAMPLE, MINIMAL][c.pick(3)]
    if not base:
        return fragment
    lines = base.split(b"\n")
    at = c.pick(len(lines) + 1)
    lines[at : at + c.pick(2)] = [fragment]
    return b"\n".join(lines)


# --- byte-level mutations of the example policy ------------------------------------------

SPECIAL = [
    b"\x00",
    b"\xff",
    b"\xfe\xff",
    b"\xef\xbb\xbf",
    b"\t",
    b"\r",
    b"\x85",
    b"&a ",
    b"*a",
    b"!!python/name:os.system ",
    b"<<: ",
    b"[",
    b"{",
    b"]",
    b"}",
    b"'",
    b'"',
    b"|",
    b">",
    b"? ",
    b"- ",
    b": ",
    b"#",
    b"%",
    b"@",
    b"`",
    b"\\",
    b"\xe2\x80\xae",
    b"\xc3",
    b"\xed\xa0\x80",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """The example (or minimal) policy with 1 to 6 byte-level mutations (one draw)."""
    c = _Choices(draw(st.binary(min_size=8, max_size=80)))
    data = bytearray([EXAMPLE, MINIMAL][c.pick(2)])

    def offset() -> int:  # anywhere in the file, from two choice bytes
        return (c.pick(256) * 256 + c.pick(256)) % (len(data) + 1)

    for _ in range(1 + c.pick(6)):
        op, i = c.pick(5), offset()
        if op == 0 and i < len(data):
            data[i] ^= 1 << c.pick(8)
        elif op == 1:
            data[i:i] = bytes(c.pick(256) for _ in range(1 + c.pick(8)))
        elif op == 2:
            del data[i : i + 1 + c.pick(40)]
        elif op == 3:
            n = 1 + c.pick(200)
            data[i:i] = data[i : i + n] * (1 + c.pick(50))
        else:
            data[i:i] = SPECIAL[c.pick(len(SPECIAL))]
    return bytes(data)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(
    max_examples=EXAMPLES,
    deadline=None,  # the bound is asserted below, on the loader alone
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.one_of(grammar_yaml(), mutated()))
def test_loader_outcome_is_policy_or_policy_error(scratch: Path, data: bytes) -> None:
    path = scratch / "fuzz.yaml"
    path.write_bytes(data)
    start = time.process_time()
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        assert exc.problems, "a PolicyError lists its problems"
        assert all(isinstance(p, PolicyProblem) and p.file == str(path) for p in exc.problems)
        assert all(p.fix for p in exc.problems)
        str(exc)  # renders
    else:
        assert isinstance(policy, Policy)
    elapsed = time.process_time() - start
    assert elapsed <= MAX_SECONDS, f"{elapsed:.2f} s"
