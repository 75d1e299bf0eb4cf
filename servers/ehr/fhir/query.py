"""Parsing a FHIR R4 search request (R4 3.1.1) into criteria the store can run.

- Several values in one parameter, comma-separated, are OR-ed; the same parameter repeated is AND-ed
  (R4 3.1.1.5.1); ``\\,`` ``\\|`` ``\\$`` ``\\\\`` are escapes (R4 3.1.1.5.7). Empty values are ignored.
- ``token`` (R4 3.1.1.5.5): ``code``, ``system|code``, ``|code`` (no system), ``system|`` (any code).
- ``date`` (R4 3.1.1.5.2): prefixes ``eq ne gt lt ge le`` over ranges at the value's precision;
  ``sa eb ap`` are refused (400).
- ``reference`` (R4 3.1.1.5.6): ``id``, ``Type/id`` or ``{base}/Type/id``, ``:Type`` modifier.
- Result parameters: ``_count`` (page size), ``_offset`` (start the search at that position) and
  ``_cursor`` (this server's page position, carried by ``next``/``previous`` links, :mod:`.paging`);
  ``_format`` is content negotiation (:mod:`.negotiation`).
- A modifier this server does not support is refused (400), as R4 3.1.1.5 requires; a parameter it does
  not know is returned in :attr:`SearchQuery.unknown` (the handler ignores it, or refuses it under
  ``Prefer: handling=strict``, R4 3.1.1.5).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from s4s_jupyter.core.errors import FHIRError
from servers.ehr.fhir.instants import InvalidInstant, TimeRange, parse_range
from servers.ehr.fhir.searchparams import ParamType, SearchParam, params_for

DEFAULT_COUNT = 50
MAX_COUNT = 500
#: bounds that keep one request's SQL small (SQLite's bound-variable limit) and its offsets sane
MAX_VALUES = 100
MAX_CRITERIA = 50
MAX_OFFSET = 10**9
#: R4 id datatype
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
RESULT_PARAMS = frozenset({"_count", "_offset", "_cursor", "_format"})
#: longest ``_cursor`` accepted (ours are about 100 characters)
MAX_CURSOR = 512
_DATE_PREFIX = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)?(.*)$", re.DOTALL)
_SUPPORTED_PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le"})


@dataclass(frozen=True)
class TokenValue:
    """``system`` None means any system; ``""`` means no system (``|code``); ``code`` None: any code."""

    system: str | None
    code: str | None


@dataclass(frozen=True)
class DateValue:
    prefix: str
    range: TimeRange


@dataclass(frozen=True)
class ReferenceValue:
    type: str | None
    id: str


Value = TokenValue | DateValue | ReferenceValue | str


@dataclass(frozen=True)
class Criterion:
    """One parameter occurrence: its values are OR-ed."""

    param: SearchParam
    values: tuple[Value, ...]


@dataclass(frozen=True)
class SearchQuery:
    resource_type: str
    criteria: tuple[Criterion, ...] = ()
    count: int = DEFAULT_COUNT
    offset: int = 0
    #: (name, raw value) pairs of the criteria actually applied, in request order (for Bundle links)
    applied: tuple[tuple[str, str], ...] = ()
    unknown: tuple[str, ...] = field(default=())
    #: the ``_cursor`` of a page link (:mod:`.paging`), None on a search's first page
    cursor: str | None = None

    def references(self, name: str) -> list[ReferenceValue]:
        return [v for c in self.criteria if c.param.name == name for v in c.values
                if isinstance(v, ReferenceValue)]

    def has(self, name: str) -> bool:
        return any(c.param.name == name for c in self.criteria)

    def ids(self) -> list[list[str]]:
        """The ``_id`` criteria: each inner list is OR-ed, the lists are AND-ed."""
        return [[v for v in c.values if isinstance(v, str)]
                for c in self.criteria if c.param.type == ParamType.ID]


def split_escaped(text: str, sep: str, *, unescape: bool = True) -> list[str]:
    """Split on ``sep`` unless escaped with a backslash (R4 3.1.1.5.7). ``unescape`` drops the escaping
    backslashes; without it they stay, for a later split of each part on another separator."""
    parts, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i + 1] if unescape else text[i:i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _split_values(raw: str) -> list[str]:
    # keep escapes of "|" inside each value for the token parser: split on unescaped "," only
    return split_escaped(raw, ",", unescape=False)


def parse_token(raw: str) -> TokenValue:
    parts = split_escaped(raw, "|")
    if len(parts) == 1:
        if not parts[0]:
            raise FHIRError("empty token value")
        return TokenValue(None, parts[0])
    if len(parts) != 2:
        raise FHIRError(f"a token is 'code', 'system|code', '|code' or 'system|': {raw!r}")
    system, code = parts
    if not system and not code:
        raise FHIRError(f"empty token value {raw!r}")
    return TokenValue(system, code or None)


def parse_date(raw: str) -> DateValue:
    m = _DATE_PREFIX.match(raw)
    assert m is not None  # the pattern matches any string
    prefix, value = m.group(1) or "eq", m.group(2)
    if prefix not in _SUPPORTED_PREFIXES:
        raise FHIRError(f"date prefix {prefix!r} is not supported (use eq, ne, gt, lt, ge, le)",
                        code="not-supported")
    # an unencoded '+' of a time zone offset arrives as a space: read it back
    value = re.sub(r"(T[\d:.]+) (\d{2}:\d{2})$", r"\1+\2", value)
    try:
        return DateValue(prefix, parse_range(value))
    except InvalidInstant as exc:
        raise FHIRError(f"malformed date value {raw!r}: {exc}") from exc


def parse_reference(raw: str, type_modifier: str | None, fhir_base: str) -> ReferenceValue:
    text = raw
    base = fhir_base.rstrip("/") + "/"
    if text.startswith(base):
        text = text[len(base):]
    elif "://" in text:
        # an absolute reference to another server can match nothing here
        return ReferenceValue("~foreign", text)
    parts = text.split("/")
    if len(parts) == 1:
        rtype, rid = type_modifier, parts[0]
    elif len(parts) == 2:
        rtype, rid = parts
        if type_modifier and rtype != type_modifier:
            raise FHIRError(f"reference {raw!r} does not match the :{type_modifier} modifier")
    elif len(parts) == 4 and parts[2] == "_history":
        rtype, rid = parts[0], parts[1]
    else:
        raise FHIRError(f"malformed reference {raw!r}")
    if not ID_PATTERN.match(rid) or (rtype is not None and not re.match(r"^[A-Z][A-Za-z]+$", rtype)):
        raise FHIRError(f"malformed reference {raw!r}")
    return ReferenceValue(rtype, rid)


def _int(name: str, values: list[str], lo: int, hi: int | None = None) -> int:
    if len(values) != 1:
        raise FHIRError(f"{name} may be given once")
    text = values[0].strip()
    if not text.isdigit() or len(text) > 12:
        raise FHIRError(f"{name} must be a non-negative integer, got {values[0]!r}")
    n = int(text)
    if n < lo or (hi is not None and n > hi):
        raise FHIRError(f"{name} must be between {lo} and {hi}, got {values[0]!r}")
    return n


def parse_search(resource_type: str, arguments: Mapping[str, Iterable[str]], fhir_base: str) -> SearchQuery:
    """Parse decoded query arguments (name -> values in order) for a search on ``resource_type``.

    Raises :class:`FHIRError` (400) for malformed values and unsupported modifiers or prefixes.
    """
    known = params_for(resource_type)
    criteria: list[Criterion] = []
    applied: list[tuple[str, str]] = []
    unknown: list[str] = []
    count, offset = DEFAULT_COUNT, 0
    cursor: str | None = None
    for key, raw_values in arguments.items():
        values = [v for v in raw_values if v != ""]
        if key in RESULT_PARAMS:
            if key == "_count" and values:
                count = min(_int("_count", values, 0), MAX_COUNT)
            elif key == "_offset" and values:
                offset = _int("_offset", values, 0, MAX_OFFSET)
            elif key == "_cursor" and values:
                if len(values) != 1 or len(values[0]) > MAX_CURSOR:
                    raise FHIRError("_cursor may be given once (follow the Bundle's links unchanged)")
                cursor = values[0]
            continue
        name, _, modifier = key.partition(":")
        param = known.get(name)
        if param is None:
            unknown.append(key)
            continue
        type_modifier: str | None = None
        if modifier:
            if param.type == ParamType.REFERENCE and re.match(r"^[A-Z][A-Za-z]+$", modifier):
                type_modifier = modifier
            else:
                raise FHIRError(f"modifier :{modifier} of {name} is not supported", code="not-supported")
        for raw in values:
            parsed: list[Value] = []
            items = _split_values(raw)
            if len(items) > MAX_VALUES:
                raise FHIRError(f"{key} has more than {MAX_VALUES} values")
            for item in items:
                if item == "":
                    raise FHIRError(f"empty value in {key}={raw!r}")
                if param.type == ParamType.TOKEN:
                    parsed.append(parse_token(item))
                elif param.type == ParamType.DATE:
                    parsed.append(parse_date(item))
                elif param.type == ParamType.REFERENCE:
                    parsed.append(parse_reference(item, type_modifier, fhir_base))
                else:
                    if not ID_PATTERN.match(item):
                        raise FHIRError(f"malformed id {item!r}")
                    parsed.append(item)
            criteria.append(Criterion(param, tuple(parsed)))
            if len(criteria) > MAX_CRITERIA:
                raise FHIRError(f"more than {MAX_CRITERIA} search parameters")
            applied.append((key, raw))
    if cursor is not None and "_offset" in arguments and any(arguments["_offset"]):
        raise FHIRError("_cursor and _offset cannot be combined")
    return SearchQuery(resource_type, tuple(criteria), count, offset, tuple(applied), tuple(unknown), cursor)
