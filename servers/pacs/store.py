"""The PACS store: content-addressed files plus an SQLite (WAL) index.

Files live under ``objects/<sha256[:2]>/<sha256[2:]>``, named by the SHA-256 of their bytes, never by a
UID. Storing an object (``put``) writes it to ``tmp/``, fsyncs it, renames it into place, fsyncs the
folder, and only then commits its index rows, so after a process kill at any moment:

- no index row points to a missing or partial file (rows are committed after the rename);
- ``open`` removes what a kill may leave behind: temporary files and object files no row refers to.

The index keeps what queries and metadata requests need, computed once at ingest: the matching
attributes of PS3.18 10.6.1 as columns, the study/series attributes as DICOM JSON, each instance's full
metadata (PS3.18 F.2, large binary values as BulkDataURI) and its QIDO-RS answer, so no request ever
parses a stored file except for rendering, transcoding and bulk data. Counts of related series and
instances and the modalities of a study are maintained in the same transaction.

Thread safety: every thread gets its own SQLite connection; writers are serialised by one lock, and
across processes by SQLite's write transaction (``BEGIN IMMEDIATE``), inside which an instance's SOP
Instance UID is looked up again before it is indexed.

Processes: one store owns a folder (an exclusive ``flock``), because opening tidies what a kill left
behind and would delete another process's files in flight. A server with several worker processes
opens the store once in its supervisor (:meth:`Store.hand_over`) and each worker opens it with
``shared=True``: no lock of its own, no tidying.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.datadict import tag_for_keyword

from s4s_jupyter.core.errors import DICOMwebError
from servers.pacs.jsonmodel import to_json
from servers.pacs.validation import CheckedInstance, check_part10
from servers.runtime import StartupError

#: stands for the service's base URL inside stored JSON (a private-use character no DICOM value holds);
#: replaced by the real base URL when an answer is written, so the data folder can move between hosts.
BASE = "\ue000"

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL DEFAULT '',
    patient_name TEXT NOT NULL DEFAULT '',
    patient_birth_date TEXT NOT NULL DEFAULT '',
    patient_sex TEXT NOT NULL DEFAULT '',
    study_date TEXT NOT NULL DEFAULT '',
    study_time TEXT NOT NULL DEFAULT '',
    accession_number TEXT NOT NULL DEFAULT '',
    study_id TEXT NOT NULL DEFAULT '',
    referring_physician_name TEXT NOT NULL DEFAULT '',
    study_description TEXT NOT NULL DEFAULT '',
    modalities TEXT NOT NULL DEFAULT '',
    n_series INTEGER NOT NULL DEFAULT 0,
    n_instances INTEGER NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_patient_id ON studies(patient_id);
CREATE INDEX IF NOT EXISTS studies_study_date ON studies(study_date);
CREATE INDEX IF NOT EXISTS studies_accession ON studies(accession_number);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    modality TEXT NOT NULL DEFAULT '',
    series_number INTEGER,
    series_description TEXT NOT NULL DEFAULT '',
    body_part TEXT NOT NULL DEFAULT '',
    series_date TEXT NOT NULL DEFAULT '',
    pps_start_date TEXT NOT NULL DEFAULT '',
    pps_start_time TEXT NOT NULL DEFAULT '',
    n_instances INTEGER NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid, series_number);
CREATE INDEX IF NOT EXISTS series_modality ON series(modality);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    sop_class_uid TEXT NOT NULL,
    instance_number INTEGER,
    rows INTEGER,
    columns INTEGER,
    bits_allocated INTEGER,
    number_of_frames INTEGER,
    transfer_syntax TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    pixel_offset INTEGER,
    pixel_length INTEGER,
    qido TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid, instance_number);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE INDEX IF NOT EXISTS instances_sha ON instances(sha256);
"""

#: Keywords kept at study level (Patient, General Study and Patient Study modules, PS3.3 C.7.1-C.7.2).
STUDY_KEYWORDS = (
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "IssuerOfAccessionNumberSequence",
    "ReferringPhysicianName", "TimezoneOffsetFromUTC", "StudyDescription", "PatientName", "PatientID",
    "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientSize", "PatientWeight",
    "OtherPatientIDsSequence", "EthnicGroup", "PatientComments", "StudyInstanceUID", "StudyID",
    "ProcedureCodeSequence", "NameOfPhysiciansReadingStudy", "AdmittingDiagnosesDescription",
)
#: Keywords kept at series level (General Series, Frame of Reference, Equipment modules).
SERIES_KEYWORDS = (
    "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "SeriesInstanceUID",
    "SeriesNumber", "SeriesDate", "SeriesTime", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "RequestAttributesSequence", "BodyPartExamined", "Laterality",
    "ProtocolName", "OperatorsName", "PerformingPhysicianName", "Manufacturer", "ManufacturerModelName",
    "InstitutionName", "StationName", "FrameOfReferenceUID", "PatientPosition", "SeriesType",
)
#: Required instance-level return attributes (PS3.18 Table 10.6.3-5) plus the owning UIDs.
INSTANCE_KEYWORDS = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "TimezoneOffsetFromUTC", "InstanceNumber",
    "Rows", "Columns", "BitsAllocated", "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID",
)


class StoreInUse(StartupError):
    """Another open store (in this or another process) holds the data folder."""


class Conflict(DICOMwebError):
    """A store that contradicts what is stored (PS3.18 10.5.3: 409); ``reason`` for FailedSOPSequence."""

    status = 409

    def __init__(self, message: str, *, reason: int = 0x0111) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Stored:
    """Outcome of one store: the UIDs, and whether the same object was already there (idempotent)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    already_present: bool


@dataclass(frozen=True)
class InstanceFile:
    """Where an instance's bytes are, and what the retrieval code needs to know about them."""

    sop_uid: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: Path
    size: int
    pixel_offset: int | None
    pixel_length: int | None
    rows: int | None
    columns: int | None
    bits_allocated: int | None
    number_of_frames: int | None


def _tags(keywords: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{tag_for_keyword(k):08X}" for k in keywords)


STUDY_TAGS = _tags(STUDY_KEYWORDS)
SERIES_TAGS = _tags(SERIES_KEYWORDS)
INSTANCE_TAGS = _tags(INSTANCE_KEYWORDS)


def _subset(meta: dict[str, Any], tags: tuple[str, ...]) -> dict[str, Any]:
    """The elements of ``meta`` (DICOM JSON) whose tags are in ``tags``, without bulk data references."""
    return {t: meta[t] for t in tags if t in meta and "BulkDataURI" not in meta[t]}


def _text(meta: dict[str, Any], keyword: str) -> str:
    """An attribute of the DICOM JSON ``meta`` as index text (values joined by ``\\``; PN Alphabetic)."""
    element = meta.get(f"{tag_for_keyword(keyword):08X}")
    if not element or "Value" not in element:
        return ""
    parts = [v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in element["Value"]]
    return "\\".join(p for p in parts if p is not None).strip()


def _int(meta: dict[str, Any], keyword: str) -> int | None:
    element = meta.get(f"{tag_for_keyword(keyword):08X}")
    try:
        return int(element["Value"][0]) if element and element.get("Value") else None
    except (TypeError, ValueError):
        return None


def normalise_time(value: str) -> str:
    """A TM value as fixed-width ``HHMMSS.ffffff`` so that ranges compare as strings (PS3.5 6.2)."""
    v = value.replace(":", "").strip()
    main, _, frac = v.partition(".")
    main = (main + "000000")[:6]
    return f"{main}.{(frac + '000000')[:6]}"


def metadata_json(checked: CheckedInstance, threshold: int) -> dict[str, Any]:
    """The instance's DICOM JSON (PS3.18 F.2): binary values longer than ``threshold`` become
    BulkDataURIs ``{base}/studies/../series/../instances/../bulkdata/{tag}[/{item}/{tag}...]``."""
    base = (f"{BASE}/studies/{checked.study_uid}/series/{checked.series_uid}"
            f"/instances/{checked.sop_instance_uid}/bulkdata/")
    return to_json(checked.dataset, lambda path: base + path, threshold)


class Store:
    """Content-addressed files plus the SQLite index. Blocking: call from worker threads."""

    def __init__(self, data_dir: Path, *, fsync: bool = True, bulk_data_threshold: int = 1024,
                 shared: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.objects = self.data_dir / "objects"
        self.tmp = self.data_dir / "tmp"
        self.index_path = self.data_dir / "index.sqlite3"
        self.fsync = fsync
        self.bulk_data_threshold = bulk_data_threshold
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._io = ThreadPoolExecutor(4, thread_name_prefix="s4s-pacs-io")
        self._lock_file: BinaryIO | None = None
        #: the writer lock of worker processes sharing the folder (see _writer_across_processes)
        self._writer_file: BinaryIO | None = None
        if shared:
            self._writer_file = open(self.data_dir / "write.lock", "a+b")  # noqa: SIM115 (closed in close)
            self.db  # noqa: B018 (opens this thread's connection: fails early on a bad folder)
        else:
            self._open()

    # -- lifecycle ------------------------------------------------------------------------------------

    def _open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # one store per folder: the tidying below would delete another process's files in flight
        self._lock_file = open(self.data_dir / "lock", "a+b")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StoreInUse(f"the PACS data folder {self.data_dir} is in use by another store") from None
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():  # a kill during a write leaves these behind
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        db = self.db
        db.executescript(SCHEMA)
        self._remove_unreferenced_objects()

    def _remove_unreferenced_objects(self) -> None:
        """Delete object files with no index row (a kill between rename and commit leaves one)."""
        referenced = {row[0] for row in self.db.execute("SELECT DISTINCT sha256 FROM instances")}
        for sub in self.objects.iterdir():
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                if sub.name + f.name not in referenced:
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection (WAL, synchronous=NORMAL: durable at checkpoints, never corrupt)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.index_path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        self._close_index()
        if self._writer_file is not None:
            self._writer_file.close()
            self._writer_file = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the folder
            self._lock_file = None

    def _close_index(self) -> None:
        self._io.shutdown(wait=True)
        with self._connections_lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    def hand_over(self) -> BinaryIO:
        """Close the index but keep the folder: for a supervisor about to fork workers that open the
        store with ``shared=True``. Returns the lock file; closing it releases the folder."""
        if self._lock_file is None:
            raise StoreInUse("only the store that owns the folder can hand it over")
        self._close_index()
        lock, self._lock_file = self._lock_file, None
        return lock

    # -- storing --------------------------------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256[2:]

    def put(self, data: bytes, study_uid: str | None = None) -> Stored:
        """Check and store one Part 10 object (PS3.18 10.5).

        Raises :class:`~servers.pacs.validation.InvalidInstance` (400) for a bad object and
        :class:`Conflict` (409) when ``study_uid`` is given and differs from the object's, or when another
        object is stored under its SOP Instance UID. Storing the same bytes again is a no-op.
        """
        checked = check_part10(data)
        if study_uid is not None and checked.study_uid != study_uid:
            raise Conflict(f"StudyInstanceUID {checked.study_uid} differs from the study {study_uid} of the "
                           "request URL", reason=0xA900)
        sha = hashlib.sha256(data).hexdigest()
        existing = self._existing(checked.sop_instance_uid)
        if existing is not None:
            return self._same_or_conflict(existing, sha, checked)
        if self.fsync:
            # the file is written and fsynced in another thread while this one builds the index rows
            written = self._io.submit(self._write_file, sha, data)
            try:
                rows = self._rows(checked, sha, len(data))
            finally:
                written.result()
        else:
            rows = self._rows(checked, sha, len(data))
            self._write_file(sha, data)
        with self._write_lock, self._writer_across_processes():
            try:
                return self._insert(checked, sha, rows)
            except Conflict:
                self._drop_if_unreferenced(sha)
                raise

    @contextlib.contextmanager
    def _writer_across_processes(self) -> Iterator[None]:
        """Hold the folder's writer lock (``flock`` on ``write.lock``) when worker processes share the
        store. SQLite would serialise their transactions too, but a writer that finds the database locked
        sleeps in SQLite's busy handler (1, 2, 5, 10 ms ...); a process blocked in ``flock`` is woken as
        soon as the lock is free."""
        if self._writer_file is None:
            yield
            return
        fcntl.flock(self._writer_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._writer_file, fcntl.LOCK_UN)

    def _existing(self, sop_uid: str) -> tuple[str, str, str] | None:
        row = self.db.execute("SELECT sha256, study_uid, series_uid FROM instances WHERE sop_uid = ?",
                              (sop_uid,)).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _same_or_conflict(self, existing: tuple[str, str, str], sha: str, c: CheckedInstance) -> Stored:
        if existing[0] != sha:
            raise Conflict(f"a different object is already stored under SOPInstanceUID {c.sop_instance_uid}")
        return Stored(c.sop_class_uid, c.sop_instance_uid, c.study_uid, c.series_uid, True)

    def _write_file(self, sha: str, data: bytes) -> None:
        final = self.object_path(sha)
        # a losing concurrent writer of the same bytes may unlink the file between any two calls here
        with contextlib.suppress(FileNotFoundError):
            if final.stat().st_size == len(data):
                return
        final.parent.mkdir(exist_ok=True)
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        os.close(fd)
        os.replace(tmp, final)
        if self.fsync:
            dfd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _drop_if_unreferenced(self, sha: str) -> None:
        if self.db.execute("SELECT 1 FROM instances WHERE sha256 = ? LIMIT 1", (sha,)).fetchone() is None:
            with contextlib.suppress(FileNotFoundError):
                self.object_path(sha).unlink()

    def _rows(self, c: CheckedInstance, sha: str, size: int) -> dict[str, Any]:
        """Everything the index keeps about one instance, computed outside the write lock."""
        meta = metadata_json(c, self.bulk_data_threshold)
        qido = _subset(meta, INSTANCE_TAGS)
        qido["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
        qido["00081190"] = {"vr": "UR", "Value": [
            f"{BASE}/studies/{c.study_uid}/series/{c.series_uid}/instances/{c.sop_instance_uid}"]}
        return {
            "study": (c.study_uid, _text(meta, "PatientID"), _text(meta, "PatientName"),
                      _text(meta, "PatientBirthDate"), _text(meta, "PatientSex"), _text(meta, "StudyDate"),
                      normalise_time(_text(meta, "StudyTime")) if _text(meta, "StudyTime") else "",
                      _text(meta, "AccessionNumber"), _text(meta, "StudyID"),
                      _text(meta, "ReferringPhysicianName"), _text(meta, "StudyDescription"),
                      json.dumps(_subset(meta, STUDY_TAGS), ensure_ascii=False)),
            "series": (c.series_uid, c.study_uid, _text(meta, "Modality"), _int(meta, "SeriesNumber"),
                       _text(meta, "SeriesDescription"), _text(meta, "BodyPartExamined"),
                       _text(meta, "SeriesDate"),
                       _text(meta, "PerformedProcedureStepStartDate"),
                       normalise_time(_text(meta, "PerformedProcedureStepStartTime"))
                       if _text(meta, "PerformedProcedureStepStartTime") else "",
                       json.dumps(_subset(meta, SERIES_TAGS), ensure_ascii=False)),
            "instance": (c.sop_instance_uid, c.series_uid, c.study_uid, c.sop_class_uid,
                         _int(meta, "InstanceNumber"), _int(meta, "Rows"), _int(meta, "Columns"),
                         _int(meta, "BitsAllocated"), _int(meta, "NumberOfFrames"), c.transfer_syntax_uid,
                         sha, size, c.pixel_offset, c.pixel_length,
                         json.dumps(dict(sorted(qido.items())), ensure_ascii=False),
                         json.dumps(meta, ensure_ascii=False)),
            "patient_id": _text(meta, "PatientID"),
        }

    def _insert(self, c: CheckedInstance, sha: str, rows: dict[str, Any]) -> Stored:
        """Index one instance in one write transaction. The SOP Instance UID is looked up again inside
        it: another thread, or another worker process of the same store, may have stored it meanwhile."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            existing = self._existing(c.sop_instance_uid)
            if existing is not None:
                stored = self._same_or_conflict(existing, sha, c)
                db.execute("COMMIT")
                return stored
            study = db.execute("SELECT patient_id FROM studies WHERE study_uid = ?",
                               (c.study_uid,)).fetchone()
            if study is None:
                db.execute("INSERT INTO studies (study_uid, patient_id, patient_name, patient_birth_date, "
                           "patient_sex, study_date, study_time, accession_number, study_id, "
                           "referring_physician_name, study_description, attrs) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows["study"])
            elif study[0] != rows["patient_id"]:
                raise Conflict(f"study {c.study_uid} belongs to another PatientID than "
                               f"{rows['patient_id']!r}", reason=0xA900)
            series = db.execute("SELECT study_uid FROM series WHERE series_uid = ?",
                                (c.series_uid,)).fetchone()
            if series is None:
                db.execute("INSERT INTO series (series_uid, study_uid, modality, series_number, "
                           "series_description, body_part, series_date, pps_start_date, pps_start_time, "
                           "attrs) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?)", rows["series"])
                modalities = sorted({r[0] for r in db.execute(
                    "SELECT DISTINCT modality FROM series WHERE study_uid = ? AND modality != ''",
                    (c.study_uid,))})
                db.execute("UPDATE studies SET n_series = n_series + 1, modalities = ? WHERE study_uid = ?",
                           ("\\".join(modalities), c.study_uid))
            elif series[0] != c.study_uid:
                raise Conflict(f"series {c.series_uid} belongs to another study than {c.study_uid}",
                               reason=0xA900)
            db.execute("INSERT INTO instances (sop_uid, series_uid, study_uid, sop_class_uid, "
                       "instance_number, rows, columns, bits_allocated, number_of_frames, transfer_syntax, "
                       "sha256, size, pixel_offset, pixel_length, qido, metadata) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       rows["instance"])
            db.execute("UPDATE series SET n_instances = n_instances + 1 WHERE series_uid = ?",
                       (c.series_uid,))
            db.execute("UPDATE studies SET n_instances = n_instances + 1 WHERE study_uid = ?",
                       (c.study_uid,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Stored(c.sop_class_uid, c.sop_instance_uid, c.study_uid, c.series_uid, False)

    # -- reading --------------------------------------------------------------------------------------

    def count_instances(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM instances").fetchone()[0])

    def has_instance(self, sop_uid: str) -> bool:
        return self._existing(sop_uid) is not None

    def instance_files(self, study_uid: str, series_uid: str | None = None,
                       sop_uid: str | None = None) -> list[InstanceFile]:
        """The stored files of a study, series or instance in series/instance number order."""
        sql, args = _in_retrieval_order(
            "i.sop_uid, i.series_uid, i.study_uid, i.sop_class_uid, i.transfer_syntax, i.sha256, i.size, "
            "i.pixel_offset, i.pixel_length, i.rows, i.columns, i.bits_allocated, i.number_of_frames",
            study_uid, series_uid, sop_uid)
        return [InstanceFile(r[0], r[1], r[2], r[3], r[4], self.object_path(r[5]), r[6], r[7], r[8], r[9],
                             r[10], r[11], r[12]) for r in self.db.execute(sql, args)]

    def metadata(self, study_uid: str, series_uid: str | None = None,
                 sop_uid: str | None = None) -> list[str]:
        """The stored metadata JSON texts (with :data:`BASE` placeholders) in retrieval order."""
        sql, args = _in_retrieval_order("i.metadata", study_uid, series_uid, sop_uid)
        return [r[0] for r in self.db.execute(sql, args)]

    def query(self, sql: str, args: list[Any]) -> Iterator[tuple[Any, ...]]:
        """Run a read-only query built by :mod:`servers.pacs.qido` (parameters always bound)."""
        yield from self.db.execute(sql, args)


def _in_retrieval_order(columns: str, study_uid: str, series_uid: str | None,
                        sop_uid: str | None) -> tuple[str, list[Any]]:
    """SELECT ``columns`` of the instances of a study, series or instance, in retrieval order (series
    number, then instance number; UIDs break ties so the order is stable)."""
    sql = (f"SELECT {columns} FROM instances i JOIN series s ON s.series_uid = i.series_uid "
           "WHERE i.study_uid = ?")
    args: list[Any] = [study_uid]
    if series_uid is not None:
        sql += " AND i.series_uid = ?"
        args.append(series_uid)
    if sop_uid is not None:
        sql += " AND i.sop_uid = ?"
        args.append(sop_uid)
    return sql + " ORDER BY s.series_number, s.series_uid, i.instance_number, i.sop_uid", args
