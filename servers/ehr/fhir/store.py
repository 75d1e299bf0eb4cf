"""The EHR's FHIR resource store: SQLite, one file under the EHR's data folder.

Tables: ``resource`` (type, id, patient compartment, lastUpdated, JSON body) and three search indexes
filled from :mod:`.searchparams` when a resource is stored: ``token_index`` (system, code),
``date_index`` (range start/end in POSIX seconds, R4 3.1.1.5.2) and ``ref_index`` (target type and id).
Searches are ordered by (lastUpdated, id), which is stable. A page is one SQL statement: the first page of
a search also counts the matches; later pages continue after (or before) the (lastUpdated, id) key of a
resource of the previous page (keyset paging), so a page costs O(page size) on the ``resource_patient`` /
``resource_updated`` indexes, whatever its position, and the count is not repeated. The ``patient``
criterion on the compartment element is answered from the indexed ``resource.patient`` column.

The patient compartment restriction (``patient=``) and the scope restrictions (``alternatives``) are
applied in the same SQL ``WHERE`` as the request's criteria: the store never returns a row outside them.
The API is read-only; resources come in through :meth:`FHIRStore.put` (the demo loader).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers.demo_data.plan import DemoPlan
from servers.ehr.fhir.instants import InvalidInstant, parse_range
from servers.ehr.fhir.query import Criterion, DateValue, ReferenceValue, TokenValue
from servers.ehr.fhir.searchparams import BY_TYPE, COMPARTMENT_PATH, ParamType, params_for, patient_of

Resource = dict[str, Any]
#: open ends of a Period
_FAR_PAST, _FAR_FUTURE = -1e18, 1e18

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resource (
    type TEXT NOT NULL, id TEXT NOT NULL, patient TEXT, last_updated REAL NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (type, id));
CREATE INDEX IF NOT EXISTS resource_patient ON resource (type, patient, last_updated, id);
CREATE INDEX IF NOT EXISTS resource_updated ON resource (type, last_updated, id);
CREATE TABLE IF NOT EXISTS token_index (
    type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS token_lookup ON token_index (type, param, code, system);
CREATE INDEX IF NOT EXISTS token_owner ON token_index (type, id);
CREATE TABLE IF NOT EXISTS date_index (
    type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, start REAL NOT NULL, end REAL NOT NULL);
CREATE INDEX IF NOT EXISTS date_owner ON date_index (type, id, param);
CREATE TABLE IF NOT EXISTS ref_index (
    type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, target_type TEXT NOT NULL,
    target_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ref_owner ON ref_index (type, id, param);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreError(ValueError):
    """A resource the store cannot hold (no type, unknown type, bad id, no lastUpdated)."""


#: a resource's position in the search order: (lastUpdated in POSIX seconds, id)
SortKey = tuple[float, str]


@dataclass(frozen=True)
class Page:
    """One page of a search: ``total`` matches overall, ``resources`` from ``offset`` on, and their
    sort ``keys`` (for the keys of the next and previous pages' links)."""

    total: int
    offset: int
    resources: list[Resource]
    keys: list[SortKey]


Alternatives = Sequence[Sequence[Criterion]]


class FHIRStore:
    """A FHIR R4 resource store on SQLite. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        """Open (creating if needed) the store at ``path``; ``":memory:"`` for a throw-away store."""
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        # the secret of this store's page links (:mod:`.paging`): kept with the data, so links outlive a
        # restart of the server; it never leaves the server
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('paging_key', ?)", (secrets.token_hex(32),))
        self.paging_key: bytes = bytes.fromhex(
            self._db.execute("SELECT value FROM meta WHERE key = 'paging_key'").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing ---------------------------------------------------------------------------------------

    def put_many(self, resources: Iterable[Resource]) -> int:
        """Store (insert or replace) resources in one transaction; returns how many."""
        n = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for resource in resources:
                    self._put(resource)
                    n += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def put(self, resource: Resource) -> None:
        self.put_many([resource])

    def _put(self, resource: Resource) -> None:
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if rtype not in BY_TYPE:
            raise StoreError(f"unsupported resource type {rtype!r}")
        if not isinstance(rid, str) or not rid:
            raise StoreError("a stored resource needs an id")
        try:
            updated = parse_range(resource["meta"]["lastUpdated"]).start
        except (KeyError, TypeError, InvalidInstant) as exc:
            raise StoreError(f"{rtype}/{rid} has no valid meta.lastUpdated") from exc
        db = self._db
        for table in ("token_index", "date_index", "ref_index"):
            db.execute(f"DELETE FROM {table} WHERE type = ? AND id = ?", (rtype, rid))
        db.execute("INSERT OR REPLACE INTO resource VALUES (?, ?, ?, ?, ?)",
                   (rtype, rid, patient_of(resource), updated, json.dumps(resource, separators=(",", ":"))))
        for param in params_for(rtype).values():
            if param.type == ParamType.TOKEN:
                rows = [(rtype, rid, param.name, s, c) for s, c in _tokens(param.values(resource),
                                                                             param.implicit_system)]
                db.executemany("INSERT INTO token_index VALUES (?, ?, ?, ?, ?)", rows)
            elif param.type == ParamType.DATE:
                rows_d = [(rtype, rid, param.name, a, b) for a, b in _ranges(param.values(resource))]
                db.executemany("INSERT INTO date_index VALUES (?, ?, ?, ?, ?)", rows_d)
            elif param.type == ParamType.REFERENCE:
                rows_r = [(rtype, rid, param.name, t, i) for t, i in _references(param.values(resource))]
                db.executemany("INSERT INTO ref_index VALUES (?, ?, ?, ?, ?)", rows_r)

    def load_demo(self, plan: DemoPlan) -> bool:
        """Load the demo plan's clinical resources once. Idempotent: a store already holding exactly this
        data set (same content hash) is left alone and False returned; other content is replaced."""
        from servers.demo_data.clinical import clinical_resources

        resources = clinical_resources(plan)
        digest = hashlib.sha256(json.dumps(resources, sort_keys=True).encode()).hexdigest()
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'demo_digest'").fetchone()
        if row and row[0] == digest:
            return False
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for table in ("resource", "token_index", "date_index", "ref_index"):
                    self._db.execute(f"DELETE FROM {table}")
                for resource in resources:
                    self._put(resource)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('demo_digest', ?)", (digest,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    # -- reading ---------------------------------------------------------------------------------------

    def count(self, resource_type: str | None = None) -> int:
        with self._lock:
            if resource_type is None:
                return int(self._db.execute("SELECT COUNT(*) FROM resource").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM resource WHERE type = ?",
                                        (resource_type,)).fetchone()[0])

    def read(self, resource_type: str, rid: str, *, patient: str | None = None,
             alternatives: Alternatives | None = None) -> Resource | None:
        """The resource, or None if absent or outside the patient compartment / the alternatives."""
        page = self.search(resource_type, (), patient=patient, alternatives=alternatives, ids=(rid,),
                           count=1)
        return page.resources[0] if page.resources else None

    def search(self, resource_type: str, criteria: Sequence[Criterion], *, patient: str | None = None,
               alternatives: Alternatives | None = None, ids: Sequence[str] = (), count: int = 50,
               offset: int = 0, after: SortKey | None = None, before: SortKey | None = None,
               total: int | None = None) -> Page:
        """Resources of ``resource_type`` matching every criterion (AND; values within one OR-ed).

        ``patient`` restricts to that patient's compartment. ``alternatives`` (None: unrestricted) is a
        list of criteria groups of which a resource must match at least one (a SMART v2 scope's query).

        The page is the ``count`` matches after the sort key ``after``, or the ``count`` matches before
        ``before``, or (neither) the ``count`` matches from ``offset`` on. ``offset`` is only reported
        back with a key; ``total`` (the count of an earlier page of the same search) saves the count.
        """
        sql, args = self.page_statement(resource_type, criteria, patient=patient, alternatives=alternatives,
                                        ids=ids, count=count, offset=offset, after=after, before=before)
        with self._lock:
            if total is None:
                cond, cargs = _where(resource_type, criteria, patient, alternatives, ids)
                total = int(self._db.execute(f"SELECT COUNT(*) FROM resource r WHERE {cond}",
                                             cargs).fetchone()[0])
            rows = [] if count <= 0 else self._db.execute(sql, args).fetchall()
        if before is not None:
            rows.reverse()
        return Page(total, offset, [json.loads(b) for (_, _, b) in rows], [(u, i) for (u, i, _) in rows])

    def page_statement(self, resource_type: str, criteria: Sequence[Criterion], *, patient: str | None = None,
                       alternatives: Alternatives | None = None, ids: Sequence[str] = (), count: int = 50,
                       offset: int = 0, after: SortKey | None = None, before: SortKey | None = None
                       ) -> tuple[str, list[Any]]:
        """The SQL and arguments of one page of :meth:`search` (also for ``EXPLAIN QUERY PLAN``)."""
        cond, args = _where(resource_type, criteria, patient, alternatives, ids)
        order = "r.last_updated, r.id"
        if after is not None:
            cond += " AND (r.last_updated, r.id) > (?, ?)"
            args.extend(after)
        elif before is not None:
            cond += " AND (r.last_updated, r.id) < (?, ?)"
            args.extend(before)
            order = "r.last_updated DESC, r.id DESC"
        keyed = after is not None or before is not None
        args.extend((max(count, 0), 0 if keyed else offset))
        return (f"SELECT r.last_updated, r.id, r.body FROM resource r WHERE {cond} ORDER BY {order} "
                "LIMIT ? OFFSET ?", args)


def _where(resource_type: str, criteria: Sequence[Criterion], patient: str | None,
           alternatives: Alternatives | None, ids: Sequence[str]) -> tuple[str, list[Any]]:
    """The ``WHERE`` of a search (without its page position) and its arguments."""
    where = ["r.type = ?"]
    args: list[Any] = [resource_type]
    if patient is not None:
        where.append("r.id = ?" if resource_type == "Patient" else "r.patient = ?")
        args.append(patient)
    if ids:
        where.append(f"r.id IN ({','.join('?' * len(ids))})")
        args.extend(ids)
    for criterion in criteria:
        sql, a = _clause(criterion, resource_type)
        where.append(sql)
        args.extend(a)
    if alternatives is not None:
        groups = []
        for group in alternatives:
            parts = [_clause(c, resource_type) for c in group]
            groups.append("(" + (" AND ".join(s for s, _ in parts) or "1") + ")")
            for _, a in parts:
                args.extend(a)
        where.append("(" + (" OR ".join(groups) or "0") + ")")
    return " AND ".join(where), args


def _compartment_ids(c: Criterion, resource_type: str) -> list[str] | None:
    """The patient ids of a ``patient``/``subject`` criterion on the compartment element that the
    ``resource.patient`` column answers exactly (every value names a Patient: ``Patient/id``, or a bare id
    of ``patient``, whose R4 target is Patient only), else None."""
    path = COMPARTMENT_PATH.get(resource_type)
    if c.param.type != ParamType.REFERENCE or path is None or c.param.paths != (path,):
        return None
    out = []
    for v in c.values:
        if not isinstance(v, ReferenceValue):
            return None
        if v.type == "Patient" or (v.type is None and c.param.name == "patient"):
            out.append(v.id)
        else:
            return None
    return out


def _clause(c: Criterion, resource_type: str) -> tuple[str, list[Any]]:
    """SQL for one criterion (its values OR-ed), correlated with ``resource r``."""
    p = c.param
    patients = _compartment_ids(c, resource_type)
    if patients:
        return (f"r.patient IN ({','.join('?' * len(patients))})" if len(patients) > 1 else "r.patient = ?",
                patients)
    if p.type == ParamType.ID:
        return f"r.id IN ({','.join('?' * len(c.values))})", list(c.values)
    ors: list[str] = []
    args: list[Any] = [p.name]
    for v in c.values:
        if isinstance(v, TokenValue):
            if v.system is None:
                ors.append("x.code = ?")
                args.append(v.code)
            elif v.code is None:
                ors.append("x.system = ?")
                args.append(v.system)
            else:
                ors.append("(x.system = ? AND x.code = ?)")
                args.extend((v.system, v.code))
        elif isinstance(v, DateValue):
            ss, se = v.range.start, v.range.end
            contained = "(x.start >= ? AND x.end <= ?)"
            sql, a = {
                "eq": (contained, [ss, se]),
                "ne": (f"NOT {contained}", [ss, se]),
                "gt": ("x.end > ?", [se]),
                "lt": ("x.start < ?", [ss]),
                "ge": (f"(x.end > ? OR {contained})", [se, ss, se]),
                "le": (f"(x.start < ? OR {contained})", [ss, ss, se]),
            }[v.prefix]
            ors.append(sql)
            args.extend(a)
        elif isinstance(v, ReferenceValue):
            if v.type is None:
                ors.append("x.target_id = ?")
                args.append(v.id)
            else:
                ors.append("(x.target_type = ? AND x.target_id = ?)")
                args.extend((v.type, v.id))
    table = {ParamType.TOKEN: "token_index", ParamType.DATE: "date_index",
             ParamType.REFERENCE: "ref_index"}[p.type]
    return (f"EXISTS (SELECT 1 FROM {table} x WHERE x.type = r.type AND x.id = r.id AND x.param = ? "
            f"AND ({' OR '.join(ors) or '0'}))", args)


def _tokens(values: Iterable[Any], implicit_system: str) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for v in values:
        if isinstance(v, str):
            out.add((implicit_system, v))
        elif isinstance(v, bool):
            out.add(("", "true" if v else "false"))
        elif isinstance(v, dict):
            for cd in v.get("coding", []) if "coding" in v else [v]:
                code = cd.get("code", cd.get("value"))
                if isinstance(code, str):
                    out.add((str(cd.get("system", "")), code))
    return out


def _ranges(values: Iterable[Any]) -> list[tuple[float, float]]:
    out = []
    for v in values:
        try:
            if isinstance(v, str):
                r = parse_range(v)
                out.append((r.start, r.end))
            elif isinstance(v, dict):  # Period: open ends are unbounded
                start = parse_range(v["start"]).start if "start" in v else _FAR_PAST
                end = parse_range(v["end"]).end if "end" in v else _FAR_FUTURE
                out.append((start, end))
        except InvalidInstant:
            continue
    return out


def _references(values: Iterable[Any]) -> list[tuple[str, str]]:
    out = []
    for v in values:
        ref = v.get("reference") if isinstance(v, dict) else None
        if isinstance(ref, str) and ref.count("/") == 1:
            t, i = ref.split("/")
            out.append((t, i))
    return out


#: file name of the store under the EHR's folder of the data folder
STORE_FILE = "fhir.sqlite"


def build_store(plan: DemoPlan, path: str | Path = ":memory:") -> FHIRStore:
    """Open the store at ``path`` (the EHR app passes ``{data_dir}/ehr/fhir.sqlite``) and load ``plan``'s
    clinical resources into it unless it already holds them."""
    store = FHIRStore(path)
    store.load_demo(plan)
    return store
