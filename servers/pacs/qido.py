"""QIDO-RS: searching the store for studies, series and instances (PS3.18 10.6, matching per PS3.4 C.2.2.2).

Matching (PS3.4 C.2.2.2):

- single value matching, case-sensitive, except person names which match case-insensitively;
- list of UID matching: UIDs separated by ``\\`` or ``,`` (PS3.18 8.3.4.1); a ``\\``-separated list of other
  values matches any of them (as dcm4chee and Orthanc do, e.g. ``ModalitiesInStudy=CT\\MR``);
- wild card matching with ``*`` and ``?`` for string VRs other than dates, times and UIDs;
- range matching for DA, TM and DT: ``a-b``, ``-b``, ``a-``;
- universal matching for an empty value (the attribute is then returned, as for ``includefield``);
- ``fuzzymatching=true`` (PS3.18 8.3.4.2): a person name matches when every word of the query is the
  beginning of a word of the name, ignoring case and the ``^`` component separators.

Indexed attributes (the keys of PS3.18 Table 10.6.1-5 and a few more) match in SQL; any other attribute
matches against the stored DICOM JSON of the level. Results carry the required attributes of PS3.18
Tables 10.6.3-3/-4/-5, the attributes of higher levels when the query is not scoped to them
(PS3.18 10.6.3.3), and the ``includefield`` attributes (keywords, tags or ``all``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from s4s_jupyter.core.errors import DICOMwebError
from s4s_jupyter.core.uids import is_valid_uid
from servers.pacs.store import BASE, INSTANCE_TAGS, SERIES_TAGS, STUDY_TAGS, Store, normalise_time


class QueryLevel(Enum):
    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "INSTANCE"


class BadQuery(DICOMwebError):
    """A malformed QIDO-RS query parameter (400)."""

    status = 400


@dataclass(frozen=True)
class Column:
    level: QueryLevel
    sql: str
    vr: str


S, SE, IN = QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.INSTANCE

#: attribute tag -> indexed column
COLUMNS: dict[str, Column] = {
    "0020000D": Column(S, "st.study_uid", "UI"),
    "00100020": Column(S, "st.patient_id", "LO"),
    "00100010": Column(S, "st.patient_name", "PN"),
    "00100030": Column(S, "st.patient_birth_date", "DA"),
    "00100040": Column(S, "st.patient_sex", "CS"),
    "00080020": Column(S, "st.study_date", "DA"),
    "00080030": Column(S, "st.study_time", "TM"),
    "00080050": Column(S, "st.accession_number", "SH"),
    "00200010": Column(S, "st.study_id", "SH"),
    "00080090": Column(S, "st.referring_physician_name", "PN"),
    "00081030": Column(S, "st.study_description", "LO"),
    "00080061": Column(S, "", "CS"),  # ModalitiesInStudy: an EXISTS over series
    "0020000E": Column(SE, "se.series_uid", "UI"),
    "00080060": Column(SE, "se.modality", "CS"),
    "00200011": Column(SE, "se.series_number", "IS"),
    "0008103E": Column(SE, "se.series_description", "LO"),
    "00180015": Column(SE, "se.body_part", "CS"),
    "00080021": Column(SE, "se.series_date", "DA"),
    "00400244": Column(SE, "se.pps_start_date", "DA"),
    "00400245": Column(SE, "se.pps_start_time", "TM"),
    "00080018": Column(IN, "i.sop_uid", "UI"),
    "00080016": Column(IN, "i.sop_class_uid", "UI"),
    "00200013": Column(IN, "i.instance_number", "IS"),
    "00280010": Column(IN, "i.rows", "US"),
    "00280011": Column(IN, "i.columns", "US"),
    "00280100": Column(IN, "i.bits_allocated", "US"),
    "00280008": Column(IN, "i.number_of_frames", "IS"),
}

#: Required return attributes (PS3.18 Tables 10.6.3-3, -4, -5), by level.
STUDY_RETURN = ("00080005", "00080020", "00080030", "00080050", "00080056", "00080061", "00080090",
                "00080201", "00081190", "00100010", "00100020", "00100030", "00100040", "0020000D",
                "00200010", "00201206", "00201208")
SERIES_RETURN = ("00080005", "00080060", "00080201", "0008103E", "00081190", "0020000E", "00200011",
                 "00201209", "00400244", "00400245", "00400275")
INSTANCE_RETURN = ("00080005", "00080016", "00080018", "00080056", "00080201", "00081190", "00200013",
                   "00280010", "00280011", "00280100", "00280008")
LEVEL_OF = {**{t: S for t in STUDY_RETURN}, **{t: SE for t in SERIES_RETURN},
            **{t: IN for t in INSTANCE_RETURN}}

#: attributes an answer can take from the index without an instance's full metadata
INDEXED_TAGS = frozenset(STUDY_TAGS) | frozenset(SERIES_TAGS) | frozenset(INSTANCE_TAGS) | frozenset(
    STUDY_RETURN) | frozenset(SERIES_RETURN) | frozenset(INSTANCE_RETURN) | {"0020000E"}

_STRING_VRS = {"AE", "AS", "CS", "DS", "IS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_INT_VRS = {"IS", "US", "UL", "SS", "SL", "UV", "SV"}
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DT = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")


@dataclass(frozen=True)
class Match:
    """One matching key: the attribute, its VR, and how it matches."""

    tag: str
    vr: str
    kind: str  # "list" | "wildcard" | "range" | "fuzzy"
    values: tuple[str, ...] = ()
    low: str = ""
    high: str = ""


@dataclass
class Query:
    level: QueryLevel
    study_uid: str | None = None
    series_uid: str | None = None
    matches: list[Match] = field(default_factory=list)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0


def resolve_tag(name: str) -> str:
    """An attribute ID (keyword or 8 hex digits, PS3.18 8.3.4.1) as a DICOM JSON tag key; 400 if unknown."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return name.upper()
    tag = tag_for_keyword(name)
    if tag is None:
        raise BadQuery(f"unknown attribute {name!r} (expected a DICOM keyword or 8 hexadecimal digits)")
    return f"{tag:08X}"


def vr_of(tag: str) -> str:
    if tag in COLUMNS:
        return COLUMNS[tag].vr
    try:
        return str(dictionary_VR(int(tag, 16)))
    except KeyError:
        return "UN"


def _parse_int(name: str, values: list[str]) -> int:
    if len(values) != 1:
        raise BadQuery(f"{name} given more than once")
    v = values[0]
    if not v.isdigit():
        raise BadQuery(f"{name} must be a non-negative integer, got {v!r}")
    return int(v)


def _real_date(value: str) -> bool:
    try:
        datetime.strptime(value[:8], "%Y%m%d")
    except ValueError:
        return False
    return True


def _real_time(value: str) -> bool:
    v = normalise_time(value)
    return int(v[0:2]) <= 23 and int(v[2:4]) <= 59 and int(v[4:6]) <= 60


def _check_temporal(vr: str, value: str, name: str) -> str:
    if vr == "DA":
        if not _DATE.match(value) or not _real_date(value):
            raise BadQuery(f"{name}: {value!r} is not a date YYYYMMDD (PS3.5 6.2)")
        return value
    if vr == "TM":
        if not _TIME.match(value) or not _real_time(value):
            raise BadQuery(f"{name}: {value!r} is not a time HHMMSS.FFFFFF (PS3.5 6.2)")
        return normalise_time(value)
    if not _DT.match(value) or (len(value) >= 8 and not _real_date(value)):
        raise BadQuery(f"{name}: {value!r} is not a date-time YYYYMMDDHHMMSS.FFFFFF&ZZXX (PS3.5 6.2)")
    return value


def parse_match(name: str, value: str, fuzzy: bool) -> Match | None:
    """One ``{attributeID}={value}`` pair as a :class:`Match` (None for universal matching)."""
    if "." in name:
        raise BadQuery(f"{name}: sequence matching is not supported by this server")
    tag = resolve_tag(name)
    vr = vr_of(tag)
    if set(vr.split(" or ")) & {"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "FL", "FD"}:
        raise BadQuery(f"{name}: matching on VR {vr} is not supported")
    if value == "":
        return None
    if vr == "UI":
        uids = tuple(v for v in re.split(r"[\\,]", value))
        for uid in uids:
            if not is_valid_uid(uid):
                raise BadQuery(f"{name}: {uid!r} is not a valid UID (PS3.5 9.1)")
        return Match(tag, vr, "list", uids)
    if vr in ("DA", "TM", "DT"):
        if "*" in value or "?" in value or "\\" in value:
            raise BadQuery(f"{name}: wildcards and lists are not allowed for {vr} values")
        if "-" in value and not (vr == "DT" and re.search(r"[+-]\d{4}$", value) and value.count("-") == 1
                                 and not value.startswith("-")):
            low, _, high = value.partition("-")
            if not low and not high:
                raise BadQuery(f"{name}: a range needs at least one bound")
            return Match(tag, vr, "range", (), _check_temporal(vr, low, name) if low else "",
                         _check_temporal(vr, high, name) if high else "")
        v = _check_temporal(vr, value, name)
        return Match(tag, vr, "range", (), v, v)
    if vr in _INT_VRS:
        values = tuple(value.split("\\"))
        for v in values:
            if not re.fullmatch(r"[+-]?\d+", v.strip()):
                raise BadQuery(f"{name}: {v!r} is not an integer")
        return Match(tag, vr, "list", tuple(str(int(v)) for v in values))
    if vr == "PN" and fuzzy:
        return Match(tag, vr, "fuzzy", tuple(w for w in re.split(r"[\s^,]+", value.lower()) if w))
    values = tuple(value.split("\\"))
    if any("*" in v or "?" in v for v in values):
        return Match(tag, vr, "wildcard", values)
    return Match(tag, vr, "list", values)


def parse_query(level: QueryLevel, arguments: Mapping[str, list[str]], *, study_uid: str | None = None,
                series_uid: str | None = None) -> Query:
    """Parse QIDO-RS query parameters (PS3.18 8.3.4); raise :class:`BadQuery` for anything malformed."""
    q = Query(level, study_uid, series_uid)
    args = dict(arguments)
    if "fuzzymatching" in args:
        v = args.pop("fuzzymatching")
        if len(v) != 1 or v[0] not in ("true", "false"):
            raise BadQuery("fuzzymatching must be 'true' or 'false'")
        q.fuzzy = v[0] == "true"
    if "limit" in args:
        q.limit = _parse_int("limit", args.pop("limit"))
    if "offset" in args:
        q.offset = _parse_int("offset", args.pop("offset"))
    for raw in args.pop("includefield", []):
        for name in raw.split(","):
            name = name.strip()
            if name == "all":
                q.include_all = True
            elif name:
                if "." in name:
                    name = name.split(".")[0]
                q.include.add(resolve_tag(name))
    for name in ("accept", "charset"):  # content negotiation parameters (PS3.18 8.3.3)
        args.pop(name, None)
    for name, values in args.items():
        if len(values) != 1:
            raise BadQuery(f"{name} given more than once")
        m = parse_match(name, values[0], q.fuzzy)
        tag = resolve_tag(name)
        if m is None:
            q.include.add(tag)
            continue
        if tag == "0020000D" and study_uid is not None and study_uid not in m.values:
            q.matches.append(Match(tag, "UI", "list", ()))  # contradicts the path: nothing matches
            continue
        q.matches.append(m)
        q.include.add(tag)
    return q


def _glob(pattern: str) -> str:
    """A DICOM wildcard pattern as an SQLite GLOB pattern (``[`` escaped)."""
    return pattern.replace("[", "[[]")


def _sql_for(m: Match, col: Column) -> tuple[str, list[Any]]:
    if m.tag == "00080061":  # ModalitiesInStudy: some series of the study has one of the modalities
        inner, args = _sql_for(Match("00080060", "CS", m.kind, m.values), COLUMNS["00080060"])
        return (f"EXISTS (SELECT 1 FROM series se WHERE se.study_uid = st.study_uid AND {inner})", args)
    expr = col.sql
    if m.kind == "range":
        parts, args = [], []
        if m.low:
            parts.append(f"{expr} >= ?")
            args.append(m.low)
        if m.high:
            parts.append(f"{expr} <= ?")
            args.append(m.high)
        if m.vr == "DA" or m.vr == "TM":
            parts.append(f"{expr} != ''")
        return " AND ".join(parts), args
    if m.kind == "fuzzy":
        parts = []
        args = []
        for word in m.values:
            parts.append(f"(lower({expr}) GLOB ? OR lower({expr}) GLOB ? OR lower({expr}) GLOB ?)")
            args += [_glob(word) + "*", "*^" + _glob(word) + "*", "* " + _glob(word) + "*"]
        return " AND ".join(parts) or "1", args
    if not m.values:
        return "0", []
    if col.vr == "PN":
        expr = f"lower({expr})"
        values = tuple(v.lower() for v in m.values)
    else:
        values = m.values
    if m.kind == "wildcard":
        return "(" + " OR ".join(f"{expr} GLOB ?" for _ in values) + ")", [_glob(v) for v in values]
    if col.vr in _INT_VRS:
        return f"{expr} IN ({','.join('?' * len(values))})", [int(v) for v in values]
    return f"{expr} IN ({','.join('?' * len(values))})", list(values)


def _json_values(obj: Mapping[str, Any], tag: str) -> list[str] | None:
    el = obj.get(tag)
    if el is None:
        return None
    out = []
    for v in el.get("Value", []):
        if isinstance(v, dict):
            out.append(str(v.get("Alphabetic", "")))
        else:
            out.append(str(v))
    return out


def _match_json(m: Match, obj: Mapping[str, Any]) -> bool:
    """Match ``m`` against the DICOM JSON ``obj`` (attributes without an index column)."""
    vals = _json_values(obj, m.tag)
    if not vals:
        return False
    from fnmatch import fnmatchcase

    for v in vals:
        if m.kind == "range":
            x = normalise_time(v) if m.vr == "TM" else v
            if (not m.low or x >= m.low) and (not m.high or x <= m.high):
                return True
        elif m.kind == "fuzzy":
            words = re.split(r"[\s^]+", v.lower())
            if all(any(w.startswith(q) for w in words) for q in m.values):
                return True
        else:
            cand = v.lower() if m.vr == "PN" else v
            pats = [p.lower() for p in m.values] if m.vr == "PN" else list(m.values)
            for p in pats:
                if m.kind == "wildcard":
                    if fnmatchcase(cand, p.replace("[", "[[]")):
                        return True
                elif m.vr in _INT_VRS:
                    try:
                        if int(float(cand)) == int(p):
                            return True
                    except ValueError:
                        pass
                elif cand == p:
                    return True
    return False


def _pick(source: Mapping[str, Any], tags: Iterable[str], out: dict[str, Any]) -> None:
    for t in tags:
        if t in source and t not in out:
            out[t] = source[t]


def _empty(tags: Iterable[str], out: dict[str, Any]) -> None:
    for t in tags:
        if t not in out:
            out[t] = {"vr": vr_of(t)}


class QidoService:
    """Answers QIDO-RS queries from the store's index."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def search(self, q: Query, base_url: str) -> str | None:
        """The JSON text of the answer (a DICOM JSON array, PS3.18 F.2), or None when nothing matches."""
        sql, args, post = self._sql(q)
        rows = self.store.query(sql, args)
        if q.level is IN and not post and not q.include and not q.include_all and q.series_uid:
            # the common case (instances of one series, required attributes): stored text, joined
            texts = [r[0] for r in rows]
            if not texts:
                return None
            return ("[" + ",".join(texts) + "]").replace(BASE, base_url)
        results: list[dict[str, Any]] = []
        skipped = 0
        parsed: dict[str, Any] = {}  # study and series attributes, parsed once per query
        for row in rows:
            obj = self._result(q, row, parsed)
            if post and not all(_match_json(m, obj["__match__"]) for m in post):
                continue
            del obj["__match__"]
            if post:
                if skipped < q.offset:
                    skipped += 1
                    continue
                if q.limit is not None and len(results) >= q.limit:
                    break
            results.append(dict(sorted(obj.items())))
        if not results:
            return None
        return json.dumps(results, ensure_ascii=False, separators=(",", ":")).replace(BASE, base_url)

    def _sql(self, q: Query) -> tuple[str, list[Any], list[Match]]:
        where: list[str] = []
        args: list[Any] = []
        post: list[Match] = []
        if q.study_uid is not None:
            where.append("st.study_uid = ?")
            args.append(q.study_uid)
        if q.series_uid is not None:
            where.append("se.series_uid = ?")
            args.append(q.series_uid)
        order = {S: 0, SE: 1, IN: 2}
        for m in q.matches:
            col = COLUMNS.get(m.tag)
            if col is not None and order[col.level] <= order[q.level] and not (
                    m.tag == "00080061" and q.level is not S):
                s, a = _sql_for(m, col)
                where.append(s)
                args += a
            else:
                post.append(m)
        if q.level is S:
            sql = ("SELECT st.attrs, st.modalities, st.n_series, st.n_instances, st.study_uid "
                   "FROM studies st")
            order_by = " ORDER BY st.study_date DESC, st.study_time DESC, st.study_uid"
        elif q.level is SE:
            sql = ("SELECT st.attrs, st.modalities, st.n_series, st.n_instances, st.study_uid, se.attrs, "
                   "se.n_instances, se.series_uid FROM series se "
                   "JOIN studies st ON st.study_uid = se.study_uid")
            order_by = " ORDER BY st.study_uid, se.series_number, se.series_uid"
        else:
            simple = not q.include and not q.include_all and q.series_uid is not None and not post
            # the full metadata is read only when an answer or a match needs more than the index holds
            need_metadata = q.include_all or bool(post) or any(t not in INDEXED_TAGS for t in q.include)
            cols = "i.qido" if simple else (f"i.qido, {'i.metadata' if need_metadata else 'NULL'}, "
                                             "st.attrs, st.modalities, st.n_series, st.n_instances, "
                                             "st.study_uid, se.attrs, se.n_instances, se.series_uid")
            sql = (f"SELECT {cols} FROM instances i JOIN series se ON se.series_uid = i.series_uid "
                   "JOIN studies st ON st.study_uid = i.study_uid")
            order_by = " ORDER BY st.study_uid, se.series_number, se.series_uid, i.instance_number, i.sop_uid"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += order_by
        if not post:
            if q.limit is not None:
                sql += " LIMIT ?"
                args.append(q.limit)
            elif q.offset:
                sql += " LIMIT -1"
            if q.offset:
                sql += " OFFSET ?"
                args.append(q.offset)
        return sql, args, post

    def _study_part(self, q: Query, row: tuple[Any, ...], out: dict[str, Any],
                    parsed: dict[str, Any]) -> dict[str, Any]:
        attrs = parsed.get(row[4])
        if attrs is None:
            attrs = parsed[row[4]] = json.loads(row[0])
        modalities = [m for m in str(row[1]).split("\\") if m]
        study_uid = row[4]
        computed = {
            "00080061": {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"},
            "00201206": {"vr": "IS", "Value": [row[2]]},
            "00201208": {"vr": "IS", "Value": [row[3]]},
            "00080056": {"vr": "CS", "Value": ["ONLINE"]},
        }
        full = {**attrs, **computed}
        _pick(full, STUDY_RETURN, out)
        _empty([t for t in STUDY_RETURN if t != "00081190"], out)
        if q.level is S:
            out["00081190"] = {"vr": "UR", "Value": [f"{BASE}/studies/{study_uid}"]}
        return full

    def _series_part(self, q: Query, row: tuple[Any, ...], out: dict[str, Any], study_uid: str,
                     parsed: dict[str, Any]) -> dict[str, Any]:
        attrs = parsed.get(row[2])
        if attrs is None:
            attrs = parsed[row[2]] = json.loads(row[0])
        full = {**attrs, "00201209": {"vr": "IS", "Value": [row[1]]},
                "0020000D": {"vr": "UI", "Value": [study_uid]}}
        _pick(full, SERIES_RETURN, out)
        _empty([t for t in SERIES_RETURN if t != "00081190"], out)
        if q.level is SE:
            out["00081190"] = {"vr": "UR", "Value": [f"{BASE}/studies/{study_uid}/series/{row[2]}"]}
        return full

    def _result(self, q: Query, row: tuple[Any, ...], parsed: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        include = q.include
        if q.level is S:
            full = self._study_part(q, row, out, parsed)
            match_obj = full
        elif q.level is SE:
            series_full = self._series_part(q, (row[5], row[6], row[7]), out, row[4], parsed)
            out["0020000D"] = series_full["0020000D"]
            study_out: dict[str, Any] = {}
            study_full = self._study_part(q, row[:5], study_out, parsed)
            if q.study_uid is None:
                for t, v in study_out.items():
                    out.setdefault(t, v)
            full = {**study_full, **series_full}
            match_obj = full
        else:
            inst = json.loads(row[0])
            if len(row) == 1:
                return {**inst, "__match__": inst}
            out.update(inst)
            metadata = json.loads(row[1]) if row[1] is not None else inst
            series_out: dict[str, Any] = {}
            series_full = self._series_part(q, (row[7], row[8], row[9]), series_out, row[6], parsed)
            study_out = {}
            study_full = self._study_part(q, row[2:7], study_out, parsed)
            if q.series_uid is None:
                for t, v in series_out.items():
                    out.setdefault(t, v)
            if q.study_uid is None:
                for t, v in study_out.items():
                    out.setdefault(t, v)
            full = {**study_full, **series_full, **metadata}
            match_obj = metadata
        if q.include_all:
            for t, v in full.items():
                if "BulkDataURI" not in v and "InlineBinary" not in v:
                    out.setdefault(t, v)
        for t in include:
            if t in full:
                out.setdefault(t, full[t])
            else:
                out.setdefault(t, {"vr": vr_of(t)})
        out["__match__"] = match_obj
        return out


def keyword(tag: str) -> str:
    """The keyword of a DICOM JSON tag key, for messages."""
    return keyword_for_tag(int(tag, 16)) or tag
