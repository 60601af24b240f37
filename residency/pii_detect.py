"""Finding personal data in stored items: by attribute name and by value.

Used by the audit (global tables, the conflict log, keys of every table) and by
anything else that must tell whether a stored value is personal data. It only
*classifies*: it returns kinds (``"email"``) and attribute paths
(``author.email``), never the value it looked at, so its answers can go into a
finding, a log line or an error message as they are.

**By name.** An attribute is PII when its name, at any depth of maps and lists,
matches one of the policy's ``pii_attributes`` or a short list of common PII
names, compared case-insensitively and ignoring ``_``, ``-``, ``.`` and spaces
(``Email``, ``e_mail``, ``displayName`` all match). regionkit's own ``rk_*``
attributes are never PII.

**By value.** A string is PII-shaped when it holds:

==============  ===========================================================
kind            how it is recognised
==============  ===========================================================
``email``       ``local@domain.tld``
``phone``       E.164 (``+`` and 8 to 15 digits, a possible number for its
                country code) or a national format that is a *valid*
                number of one of the policy's countries (``phonenumbers``,
                Google's libphonenumber metadata)
``aadhaar``     12 digits, Verhoeff check digit (``python-stdnum``)
``cpf``         11 digits as ``ddd.ddd.ddd-dd`` or bare, two check digits
``ssn``         ``ddd-dd-dddd`` with a valid area, group and serial
``card``        13 to 19 digits with an issuer prefix and the Luhn check
==============  ===========================================================

National identifiers are looked for when a policy jurisdiction lists their
country (IN: Aadhaar, BR: CPF, US: SSN). Digit runs inside dates, times, IP
addresses and alphanumeric tokens (IDs, hashes, HLC stamps) are not candidates.

Why libraries: phone numbering plans change every month, and
``phonenumbers`` (the Python port of libphonenumber, kept in step with it)
knows each country's valid ranges, which no regular expression does; the
check-digit algorithms come from ``python-stdnum`` rather than being rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import phonenumbers
from stdnum import luhn
from stdnum.br import cpf as _cpf
from stdnum.in_ import aadhaar as _aadhaar
from stdnum.us import ssn as _ssn

from residency.names import normalize_name

__all__ = [
    "COMMON_PII_NAMES",
    "KIND_TEXT",
    "NATIONAL_IDS",
    "Hit",
    "PiiDetector",
    "PiiKind",
    "normalize_name",
]

PiiKind = Literal["email", "phone", "aadhaar", "cpf", "ssn", "card"]

#: How a finding refers to a value of each kind (never the value itself).
KIND_TEXT: dict[str, str] = {
    "email": "a value shaped like an e-mail address",
    "phone": "a value shaped like a phone number",
    "aadhaar": "a value shaped like an Aadhaar number (valid check digit)",
    "cpf": "a value shaped like a CPF number (valid check digits)",
    "ssn": "a value shaped like a US Social Security number",
    "card": "a value shaped like a payment card number (valid Luhn check)",
    "name": "an attribute named as personal data",
}

#: The national identifier each country's residents carry, by ISO 3166 code.
NATIONAL_IDS: dict[str, PiiKind] = {"IN": "aadhaar", "BR": "cpf", "US": "ssn"}

#: Attribute names that are personal data whatever the policy says (normalised).
COMMON_PII_NAMES = frozenset(
    {
        "email",
        "emailaddress",
        "mail",
        "phone",
        "phonenumber",
        "mobile",
        "msisdn",
        "telephone",
        "displayname",
        "fullname",
        "firstname",
        "lastname",
        "surname",
        "givenname",
        "birthdate",
        "dateofbirth",
        "dob",
        "address",
        "streetaddress",
        "postaladdress",
        "ssn",
        "socialsecuritynumber",
        "aadhaar",
        "cpf",
        "passport",
        "passportnumber",
        "nationalid",
        "taxid",
        "iban",
        "cardnumber",
        "creditcard",
        "pan",
    }
)

_SEVEN_DIGITS = re.compile(r"(?:\D*\d){7}")
_NAME_CACHE = 4096
_VALUE_CACHE = 4096
_CACHE_LEN = 64
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}")
# Dates, times and dotted quads are blanked before digit runs are looked for.
_NOT_CANDIDATE = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|"
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?"
    r"|\d{1,2}:\d{2}(?::\d{2})?"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}\b"
    r"|\b\d{1,2}/\d{1,2}/\d{2,4}\b"
    r"|(?<![.\d])-?\b\d{1,3}\.\d{3,}\b(?!\.)"
)
# A run of digits with phone-style separators, not glued to letters or other digits.
_CANDIDATE = re.compile(r"(?<![\w.+\-/#])(?:\+|00)?\(?\d[\d\s().\-/]{5,22}\d(?![\w])")
_CPF_SHAPE = re.compile(r"^\d{3}\.?\d{3}\.?\d{3}-?\d{2}$")
_SSN_SHAPE = re.compile(r"^\d{3}([- ])\d{2}\1\d{4}$")
_AADHAAR_SHAPE = re.compile(r"^\d{4}([ -]?)\d{4}\1\d{4}$")
_CARD_SEP = re.compile(r"^\d{4,6}(?:[ -]?\d{4,6}){1,4}$|^\d{13,19}$")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|64[4-9]|65|62)")
_NANP = frozenset({"US", "CA"})
_MAX_TEXT = 4096
_MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Hit:
    """Personal data found in one place of an item.

    ``path`` names where (``author.email``, ``tags[]``; a map key that is not a
    plain identifier shows as ``{key}``); ``match`` is ``"name"`` (the attribute
    is named as PII) or ``"value"`` (the value is PII-shaped); ``kind`` is
    ``"name"`` or a :data:`PiiKind`.
    """

    path: str
    match: Literal["name", "value"]
    kind: str

    @property
    def text(self) -> str:
        return KIND_TEXT.get(self.kind, "personal data")


class PiiDetector:
    """Classifies attribute names and values. Thread-safe: its only state is two bounded
    caches (attribute names, and short values found *not* to be personal data)."""

    def __init__(
        self,
        names: Iterable[str] = (),
        *,
        countries: Iterable[str] = (),
        common_names: bool = True,
    ) -> None:
        wanted = {normalize_name(n) for n in names}
        if common_names:
            wanted |= COMMON_PII_NAMES
        self.names = frozenset(wanted)
        self.countries = tuple(dict.fromkeys(c.upper() for c in countries)) or ("US",)
        self.national = frozenset(
            NATIONAL_IDS[c] for c in self.countries if c in NATIONAL_IDS
        ) or frozenset(NATIONAL_IDS.values())
        # name -> (is PII, is regionkit's own, is a plain identifier); ordinary short values
        self._names: dict[str, tuple[bool, bool, bool]] = {}
        self._ordinary: set[str] = set()

    @classmethod
    def for_policy(cls, policy: Any) -> PiiDetector:
        """The detector for ``policy``: its PII names and its jurisdictions' countries."""
        countries = [c for j in policy.jurisdictions.values() for c in j.countries]
        return cls(policy.pii_attributes(), countries=countries)

    # --- names ---

    def is_pii_name(self, name: str) -> bool:
        if name.startswith("rk_"):
            return False
        return normalize_name(name) in self.names

    # --- values ---

    def value_kind(self, value: str) -> PiiKind | None:
        """The kind of personal data ``value`` holds, or None."""
        if len(value) < 7:
            return None
        text = value[:_MAX_TEXT]
        if "@" in text and _EMAIL.search(text):
            return "email"
        if _SEVEN_DIGITS.match(text) is None:  # anchored: linear in the text
            return None
        if len(text) <= _CACHE_LEN:
            if text in self._ordinary:
                return None
            kind = self._digits_text_kind(text)
            if kind is None:  # only values found to be ordinary are remembered
                if len(self._ordinary) > _VALUE_CACHE:
                    self._ordinary.clear()
                self._ordinary.add(text)
            return kind
        return self._digits_text_kind(text)

    def _digits_text_kind(self, text: str) -> PiiKind | None:
        text = _NOT_CANDIDATE.sub(" ", text)
        for m in _CANDIDATE.finditer(text):
            kind = self._digits_kind(m.group().strip())
            if kind is not None:
                return kind
        return None

    def _digits_kind(self, cand: str) -> PiiKind | None:
        digits = "".join(c for c in cand if c.isdigit())
        n = len(digits)
        plus = cand.startswith(("+", "00"))
        if not plus:
            kind = self._national_id(cand, digits, n)
            if kind is not None:
                return kind
        if not 7 <= n <= 15:
            return None
        if plus:
            try:
                num = phonenumbers.parse("+" + cand.lstrip("+").removeprefix("00"), None)
            except phonenumbers.NumberParseException:
                return None
            return "phone" if 8 <= n <= 15 and phonenumbers.is_possible_number(num) else None
        for country in self._national(cand, n):
            try:
                num = phonenumbers.parse(cand, country)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(num):
                return "phone"
        return None

    def _national_id(self, cand: str, digits: str, n: int) -> PiiKind | None:
        checks: list[tuple[bool, PiiKind, Any]] = [
            (
                13 <= n <= 19 and bool(_CARD_SEP.match(cand) and _CARD_PREFIX.match(digits)),
                "card",
                luhn.is_valid,
            ),
            (
                n == 12 and "aadhaar" in self.national and bool(_AADHAAR_SHAPE.match(cand)),
                "aadhaar",
                _aadhaar.is_valid,
            ),
            (
                n == 11 and "cpf" in self.national and bool(_CPF_SHAPE.match(cand)),
                "cpf",
                lambda d: _cpf.is_valid(d) and len(set(d)) > 1,
            ),
            (
                n == 9 and "ssn" in self.national and bool(_SSN_SHAPE.match(cand)),
                "ssn",
                _ssn.is_valid,
            ),
        ]
        for shaped, kind, valid in checks:
            if shaped and valid(digits):
                return kind
        return None

    def _national(self, cand: str, n: int) -> tuple[str, ...]:
        """The countries whose national format ``cand`` may be in.

        A bare run of digits (no separator) is read as a national number only with a
        trunk prefix ``0``, or in the shapes people store without one: 10 digits in
        the North American plan or India, 11 in Brazil (area code + 9-digit mobile).
        Other bare runs are counters, epochs and IDs far more often than phones.
        """
        if not cand.isdigit() or cand.startswith("0"):
            return self.countries
        if n == 10:  # NANP area codes start 2-9; Indian mobiles 6-9
            return tuple(
                c
                for c in self.countries
                if (c in _NANP and cand[0] in "23456789") or (c == "IN" and cand[0] in "6789")
            )
        if n == 11 and cand[2] == "9":
            return tuple(c for c in self.countries if c == "BR")
        return ()

    def describe(self, value: object) -> str:
        """A value as a finding may mention it: by kind, never as itself."""
        if value is None:
            return "no value"
        if not isinstance(value, str):
            return f"a value of type {type(value).__name__}"
        kind = self.value_kind(value)
        if kind is not None:
            return KIND_TEXT[kind]
        return f"a value of {len(value)} characters"

    # --- items ---

    def scan(self, item: Mapping[str, Any], *, values: bool = True) -> list[Hit]:
        """Every place in ``item`` (DynamoDB-typed JSON) that holds personal data.

        Names are checked everywhere; values only with ``values``. ``rk_*``
        attributes at the top level are regionkit's own and are skipped. This runs
        once per item read, so the common case (flat scalar attributes with ordinary
        names) takes a dictionary lookup per attribute.
        """
        hits: list[Hit] = []
        names = self._names
        for name, typed in item.items():
            known = names.get(name)
            if known is None:
                known = self._learn_name(name)
            pii, own, safe = known
            if own:
                continue
            if pii:
                hits.append(Hit(name if safe else "{key}", "name", "name"))
                continue
            if not safe or not isinstance(typed, Mapping):
                hits.extend(self._walk(_seg(name), name, typed, values, 0))
                continue
            if "M" in typed or "L" in typed or "SS" in typed or "NS" in typed:
                hits.extend(self._walk(name, name, typed, values, 0))
            elif values:
                inner = typed.get("S")
                if inner is None:
                    inner = typed.get("N")
                if isinstance(inner, str):
                    kind = self.value_kind(inner)
                    if kind is not None:
                        hits.append(Hit(name, "value", kind))
        if len(hits) > 1:
            hits = list({(h.path, h.match, h.kind): h for h in hits}.values())
        return hits

    def _learn_name(self, name: str) -> tuple[bool, bool, bool]:
        """(personal data, regionkit's own, safe to show) of an attribute name, cached."""
        names = self._names
        known = names[name] = (
            not name.startswith("rk_") and self.is_pii_name(name),
            name.startswith("rk_"),
            bool(_SAFE_NAME.match(name)),
        )
        if len(names) > _NAME_CACHE:
            names.clear()
        return known

    def key_kind(self, typed: Any) -> PiiKind | None:
        """The kind of a key attribute's value (typed JSON), or None."""
        if isinstance(typed, Mapping):
            s = typed.get("S")
            if isinstance(s, str):
                return self.value_kind(s)
            n = typed.get("N")
            if isinstance(n, str):
                return self.value_kind(n)
        return None

    def _walk(self, path: str, name: str, typed: Any, values: bool, depth: int) -> Iterator[Hit]:
        if depth > _MAX_DEPTH or not isinstance(typed, Mapping):
            return
        if name and self.is_pii_name(name):
            yield Hit(path, "name", "name")
            return  # the name flags the attribute and all it holds
        if not _SAFE_NAME.match(name) and name:
            kind = self.value_kind(name) if values else None
            if kind is not None:
                yield Hit(path, "value", kind)
        yield from self._walk_inside(path, typed, values, depth)

    def _walk_inside(
        self, path: str, typed: Mapping[str, Any], values: bool, depth: int
    ) -> Iterator[Hit]:
        """What one typed value holds: its members, elements, and (with ``values``) values."""
        for tag, inner in typed.items():
            if tag == "M" and isinstance(inner, Mapping):
                for k, v in inner.items():
                    # A map's keys are data (a contact list keyed by people's names):
                    # below the top level only a name of the PII vocabulary is shown.
                    key = str(k)
                    seg = f"{path}.{key}" if self.is_pii_name(key) else f"{path}.{{key}}"
                    yield from self._walk(seg, key, v, values, depth + 1)
            elif tag == "L" and isinstance(inner, list):
                for v in inner:
                    yield from self._walk(path + "[]", "", v, values, depth + 1)
            elif values:
                hit = self._scalar_hit(path, tag, inner)
                if hit is not None:
                    yield hit

    def _scalar_hit(self, path: str, tag: str, inner: Any) -> Hit | None:
        """The hit of a string, number or set value, or None."""
        if tag in ("S", "N") and isinstance(inner, str):
            kind = self.value_kind(inner)
            return Hit(path, "value", kind) if kind is not None else None
        if tag in ("SS", "NS") and isinstance(inner, list):
            for v in inner:
                kind = self.value_kind(v) if isinstance(v, str) else None
                if kind is not None:
                    return Hit(path + "[]", "value", kind)
        return None


def _seg(name: str) -> str:
    """A top-level attribute name as findings show it (a schema name, unless it is odd)."""
    return name if _SAFE_NAME.match(name) else "{key}"
