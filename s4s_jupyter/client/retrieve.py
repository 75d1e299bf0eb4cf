"""WADO-RS retrieval (PS3.18 10.4) of series and instances, streamed to disk or loaded into pydicom.

Why our own engine and not dicomweb-client: dicomweb-client's ``retrieve_study`` / ``iter_series`` read
each part into memory and build a pydicom Dataset before the caller sees it, one request at a time.
Writing a study to disk needs less: this engine streams each ``multipart/related`` answer (over urllib3,
:mod:`s4s_jupyter.client.transport` says why) through the incremental parser of
:mod:`s4s_jupyter.core.multipart`, reads each file's UIDs from its first bytes and checks them before
writing, writes the file with a running checksum under a temporary name and renames it into place.
Memory stays bounded by the read and head sizes whatever the size of the study, and several series
download at once over a bounded number of connections per host. dicomweb-client serves the lighter
calls (QIDO-RS, metadata; rendered thumbnails go through this engine, see :meth:`Retriever.rendered`).

Layout on disk: ``{directory}/{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``
(PatientID from the file, made safe for file names; the FHIR patient id when the file has none). A
sidecar ``{directory}/.s4s-manifest.jsonl`` records the size and checksum (CRC-32, or SHA-256 on request)
of every file written, so a second call skips what is complete and verified and fetches only the rest
(resumable). ``429``/``503`` answers are retried after their ``Retry-After`` (RFC 9110 10.2.3);
connection errors and other ``5xx`` with exponential back-off (:mod:`s4s_jupyter.client.retry`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol
from urllib.parse import urlencode, urlsplit

import httpx

from s4s_jupyter.client.retry import RETRY_STATUSES, RetryPolicy
from s4s_jupyter.client.targets import (
    DICOMwebEndpoint,
    InstanceInfo,
    SeriesTarget,
    qido_instances,
)
from s4s_jupyter.client.transport import TRANSPORT_ERRORS, Response, StreamingHTTP, TransportError, done
from s4s_jupyter.core.errors import ClientError
from s4s_jupyter.core.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    parse_content_type,
)
from s4s_jupyter.core.uids import check_uid, is_valid_uid

if TYPE_CHECKING:
    import pandas as pd
    from pydicom import Dataset

try:
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # a platform without isal's wheels: the same values, slower
    _crc32 = zlib.crc32

#: ``Accept`` of WADO-RS instance retrieval: Part 10 files in the stored transfer syntax (PS3.18 8.7.3.5)
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
MANIFEST_FILE = ".s4s-manifest.jsonl"
MANIFEST_COLUMNS = ["patient", "fhir_study", "study_uid", "series_uid", "sop_uid", "instance_number",
                    "patient_id", "path", "size", "checksum", "status", "error"]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: the statuses of an instance that is complete where it is (on disk or in memory)
_COMPLETE = ("downloaded", "verified", "loaded")
#: how much of each part is kept in memory to read its UIDs without opening the file again
_HEAD_BYTES = 64 * 1024
#: how much is read from the connection at a time (what memory per download is bounded by)
_CHUNK_BYTES = 256 * 1024
#: the last tag the kit reads from a file's header: Instance Number (0020,0013); the UIDs come before
_LAST_HEADER_TAG = 0x00200013
#: SOP Instance UID, Patient ID, Study/Series Instance UID, Instance Number: all that is parsed
_HEADER_TAGS: list[int] = [0x00080018, 0x00100020, 0x0020000D, 0x0020000E, 0x00200013]


@dataclass(frozen=True)
class _Header:
    """What the kit reads from each file: where it belongs."""

    study_uid: str
    series_uid: str
    sop_uid: str
    patient_id: str
    instance_number: int | None

    @classmethod
    def of(cls, ds: Dataset) -> _Header:
        """From a Dataset's elements, left as read: an element pydicom has not converted yet is read from
        its ASCII bytes (converting the five cost 5-8% of the kit's CPU on 128 KiB instances, issue 5)."""
        def text(tag: int) -> str:
            elem = ds.get_item(tag)
            if elem is None:
                return ""
            value = elem.value
            if isinstance(value, bytes) and value.isascii():
                return _text(value)
            value = ds[tag].value  # converted by pydicom (a character set, an odd VR)
            return "" if value is None else str(value)

        number = text(0x00200013)
        return cls(text(0x0020000D), text(0x0020000E), text(0x00080018), text(0x00100020),
                   int(number) if number.lstrip("+-").isdigit() else None)


def _text(value: Any) -> str:
    return value.decode("latin-1").strip("\0 ") if isinstance(value, bytes) else ""


def _read_header(head: bytes, path: Path) -> _Header:
    """The UIDs of a Part 10 file (PS3.10 7.1) from its first bytes (else from the file).

    Uses pydicom's element reader and stops after Instance Number (0020,0013): raw elements, no
    Dataset, a fraction of what ``dcmread(stop_before_pixels=True)`` costs. A deflated transfer syntax
    (or a header longer than the head) falls back to ``read_partial`` on the file. Raises
    ``InvalidDicomError`` for anything that is not Part 10.
    """
    from pydicom.filereader import data_element_generator, read_partial, read_preamble
    from pydicom.uid import UID

    def stop(tag: Any, vr: Any, length: int) -> bool:
        return int(tag) > _LAST_HEADER_TAG

    fp = io.BytesIO(head)
    read_preamble(fp, False)  # "DICM" or InvalidDicomError
    meta = {int(raw.tag): raw.value for raw in data_element_generator(  # group 2: explicit VR LE
        fp, False, True, stop_when=lambda tag, vr, length: int(tag) >> 16 != 2)}
    ts = UID(_text(meta.get(0x00020010)))
    if ts.is_transfer_syntax and not ts.is_deflated:
        try:
            found = {int(raw.tag): raw.value for raw in data_element_generator(
                fp, ts.is_implicit_VR, ts.is_little_endian, stop_when=stop, specific_tags=_HEADER_TAGS)}
        except (EOFError, OSError, ValueError, struct.error):
            found = {}
        if 0x00080018 in found and 0x0020000E in found:
            number = _text(found.get(0x00200013))
            return _Header(_text(found.get(0x0020000D)), _text(found.get(0x0020000E)),
                           _text(found[0x00080018]), _text(found.get(0x00100020)),
                           int(number) if number.lstrip("+-").isdigit() else None)
    with path.open("rb") as f:  # deflated, or a header longer than the head
        return _Header.of(read_partial(f, stop_when=stop, specific_tags=_HEADER_TAGS))


#: VRs whose explicit-VR length field is 4 bytes after 2 reserved ones (PS3.5 7.1.2, Table 7.1-1)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                       b"UV"})
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
                        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
_IMPLICIT_LE = "1.2.840.10008.1.2"
#: standard transfer syntaxes whose data set is not explicit VR little endian, unencoded (PS3.5 10)
_NOT_PLAIN_EXPLICIT_LE = frozenset({_IMPLICIT_LE, "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})
_UINT32 = struct.Struct("<I")
_EXPLICIT = struct.Struct("<HH2sH")  # tag, VR, 2-byte length (or the 2 reserved bytes of a long VR)
_IMPLICIT = struct.Struct("<HH0sI")  # tag, no VR, 4-byte length


def _walk(buf: bytes | memoryview, pos: int, end: int, implicit: bool, last_tag: int,
          wanted: frozenset[int], whole: bool = False) -> dict[int, bytes] | None:
    """The values of ``wanted`` tags among the elements at ``buf[pos:end]`` up to ``last_tag`` (``whole``:
    ``end`` is where the elements end), or None when the bytes run out first or an element is one this
    reader leaves to pydicom (a sequence or item of undefined length, an unknown VR). One ``struct``
    unpack per element (tag, VR and short length together)."""
    found: dict[int, bytes] = {}
    unpack = _IMPLICIT.unpack_from if implicit else _EXPLICIT.unpack_from
    while pos + 8 <= end:
        group, element, vr, length = unpack(buf, pos)
        tag = group << 16 | element
        if tag > last_tag:
            return found
        if implicit or vr in _SHORT_VRS:
            pos += 8
        elif vr in _LONG_VRS and pos + 12 <= end:
            length = _UINT32.unpack_from(buf, pos + 8)[0]
            pos += 12
        else:
            return None
        if length == 0xFFFFFFFF:
            return None
        if tag in wanted:
            if pos + length > end:
                return None
            found[tag] = bytes(buf[pos:pos + length])
        pos += length
    return found if whole and pos == end else None


def _header_from_head(head: bytes | memoryview) -> _Header | None:
    """The UIDs of a Part 10 file from its first bytes, without pydicom: the common case only.

    Reads the File Meta Information (PS3.10 7.1, explicit VR little endian, its length from
    (0002,0000)) for the transfer syntax, then the data set's elements up to Instance Number in implicit
    or explicit VR little endian (PS3.5 7.1), skipping values by their lengths. Anything else (a deflated
    or big endian data set, a private transfer syntax, an element of undefined length before Instance
    Number, too few bytes, no ``DICM``) gives None, and :func:`_read_header` (pydicom) decides. About
    ten times cheaper than pydicom's element generator, which matters at hundreds of files a second.
    """
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00" \
            or head[136:138] != b"UL":
        return None
    meta_end = 144 + _UINT32.unpack_from(head, 140)[0]
    meta = _walk(head, 144, min(meta_end, len(head)), False, 0x0002FFFF, frozenset({0x00020010}), True)
    if meta is None or meta_end > len(head):
        return None
    ts = _text(meta.get(0x00020010, b""))
    if not ts.startswith("1.2.840.10008.1.2") or (ts in _NOT_PLAIN_EXPLICIT_LE and ts != _IMPLICIT_LE):
        return None
    found = _walk(head, meta_end, len(head), ts == _IMPLICIT_LE, _LAST_HEADER_TAG, frozenset(_HEADER_TAGS))
    if found is None or 0x00080018 not in found or 0x0020000E not in found:
        return None
    number = _text(found.get(0x00200013))
    return _Header(_text(found.get(0x0020000D)), _text(found.get(0x0020000E)), _text(found[0x00080018]),
                   _text(found.get(0x00100020)), int(number) if number.lstrip("+-").isdigit() else None)


def safe_name(text: str) -> str:
    """``text`` as one file name component (letters, digits, ``._-``; never ``.`` or ``..``)."""
    name = _UNSAFE.sub("_", text.strip()).strip("._") or "_"
    return name[:64]


class _CRC32:
    """CRC-32 (the zlib/gzip polynomial, ``zlib.crc32``'s values) with hashlib's interface, computed
    with ISA-L (``isal``) when installed: 1.5 us per 128 KiB against zlib's 23 us on this project's
    machine (PCLMULQDQ), which was 6-7 ms of CPU in a 200-file download of 27 MB (issue 5)."""

    name = "crc32"

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | memoryview) -> None:
        self.value = _crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


class _Digest(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


#: the checksums a download can record per file, by name
CHECKSUMS: dict[str, Callable[[], _Digest]] = {"crc32": _CRC32, "sha256": hashlib.sha256}


def checksum_file(path: Path, algorithm: str) -> str:
    """``{algorithm}:{hex digest}`` of a file's content (``algorithm``: a key of :data:`CHECKSUMS`)."""
    digest = CHECKSUMS[algorithm]()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return f"{algorithm}:{digest.hexdigest()}"


@dataclass(frozen=True)
class _Unit:
    """One request: a whole series (``sop_uid`` None) or one instance."""

    target: SeriesTarget
    sop_uid: str | None = None

    @property
    def url(self) -> str:
        return self.target.url + (f"/instances/{self.sop_uid}" if self.sop_uid else "")


@dataclass(frozen=True)
class RetrievalProgress:
    """Where a retrieval stands, as passed to an ``on_progress`` callback after every instance.

    ``instances_total`` is what the call asked for (None when not known in advance); ``instances_done``
    counts instances complete (written and renamed into place, verified from an earlier call, or loaded
    into a Dataset); ``bytes_received`` counts response bytes read so far (multipart framing included).
    ``sop_uid`` is the instance that just completed (None for the first call, before any).
    """

    instances_done: int
    instances_total: int | None
    bytes_received: int
    sop_uid: str | None = None

    @property
    def fraction(self) -> float | None:
        """Done / total (None when the total is unknown or zero)."""
        return self.instances_done / self.instances_total if self.instances_total else None


#: ``on_progress(RetrievalProgress)``: called from the download threads, one call at a time
ProgressCallback = Callable[[RetrievalProgress], None]


class _Progress:
    """Counters of one call, reported to two bars, instances and bytes (``tqdm.auto``: a widget in
    notebooks, text elsewhere), and to the caller's ``on_progress`` after every instance."""

    def __init__(self, enabled: bool, total_instances: int | None, what: str,
                 callback: ProgressCallback | None = None) -> None:
        self.bars: list[Any] = []
        self.total = total_instances
        self.done = 0
        self.received = 0
        self.callback = callback
        self._lock = threading.Lock()
        if enabled:
            from tqdm.auto import tqdm

            self.instances = tqdm(total=total_instances, desc=what, unit="inst")
            self.bytes = tqdm(total=None, desc="received", unit="B", unit_scale=True, unit_divisor=1024)
            self.bars = [self.instances, self.bytes]
        if callback is not None:
            callback(RetrievalProgress(0, total_instances, 0))

    def add_instances(self, n: int = 1, sop_uid: str | None = None) -> None:
        with self._lock:
            self.done += n
            if self.bars:
                self.instances.update(n)
            if self.callback is not None:
                self.callback(RetrievalProgress(self.done, self.total, self.received, sop_uid))

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.received += n
            if self.bars:
                self.bytes.update(n)

    def set_total(self, total: int) -> None:
        """The number of instances, once known (after the retrieval started); reported from then on."""
        with self._lock:
            self.total = total
            if self.bars:
                self.instances.total = total
                self.instances.refresh()

    def close(self) -> None:
        for bar in self.bars:
            bar.close()


#: the hidden names :meth:`_Run.temporary` gives a file on its way into a series folder:
#: ``.{SOPInstanceUID}.{pid}-{n}.part``, or ``.{SOPInstanceUID}.{8 random}.part`` (``mkstemp``)
_PART_NAME = re.compile(r"^\.(?P<sop>[0-9]+(?:\.[0-9]+)*)\.(?:(?P<pid>[0-9]+)-[0-9]+|[a-z0-9_]{8})\.part$")
#: the names of the header-less parts under ``{directory}/.s4s-tmp`` (``mkstemp`` defaults)
_TMP_PART_NAME = re.compile(r"^tmp[a-z0-9_]{8}\.part$")


def _process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (POSIX ``kill(pid, 0)``; one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True  # unknown: keep the file
    return True


def remove_stale_parts(folder: str | os.PathLike[str], before: float,
                       pattern: re.Pattern[str] = _PART_NAME) -> list[str]:
    """Remove the temporary files an interrupted download left in ``folder`` (a crash, a killed kernel):
    the names ``pattern`` matches (only the kit's own), last modified before ``before`` (seconds since the
    epoch: the start of the current run), and not written by another live process (the process id in
    the name). Returns the names removed. Nothing else is ever touched; a file that vanishes or cannot
    be removed meanwhile is left to the next run."""
    removed: list[str] = []
    own = os.getpid()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not entry.is_file(follow_symlinks=False) or info.st_mtime >= before:
                continue
            pid = match.groupdict().get("pid")
            if pid is not None and int(pid) != own and _process_alive(int(pid)):
                continue  # another process's download may still be writing it
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(entry.name)
    return removed


class _Run:
    """State of one call: what is done, the records, the sidecar manifest, the progress bars."""

    def __init__(self, directory: Path | None, progress: _Progress, checksum: str = "crc32") -> None:
        self.directory = directory
        self.started = time.time()  # temporary files older than this are stale (remove_stale_parts)
        self.stale_removed: list[str] = []
        self.checksum = checksum
        self.progress = progress
        self.lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {}  # SOP UID -> manifest row
        self.datasets: dict[str, Dataset] = {}
        self.folders: dict[tuple[str, str, str], str] = {}  # (patient, study, series) -> folder, created
        self._names = itertools.count()
        self.cancelled = threading.Event()
        self._buffers = threading.local()
        self.sidecar: BinaryIO | None = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / ".s4s-tmp").mkdir(exist_ok=True)
            self.stale_removed += remove_stale_parts(directory / ".s4s-tmp", self.started, _TMP_PART_NAME)
            self.sidecar = (directory / MANIFEST_FILE).open("ab")

    def part_buffer(self) -> bytearray:
        """This thread's buffer for parts read into memory (one part at a time per thread)."""
        buf: bytearray | None = getattr(self._buffers, "buf", None)
        if buf is None:
            buf = self._buffers.buf = bytearray()
        return buf

    def sweep(self, folder: str) -> None:
        """Remove stale temporary files of earlier runs from a series folder (once per folder and run)."""
        removed = remove_stale_parts(folder, self.started)
        if removed:
            with self.lock:
                self.stale_removed += removed

    def temporary(self, folder: str, sop_uid: str) -> tuple[int, str]:
        """A new file for ``sop_uid`` under a hidden name in ``folder`` (process id and a counter make
        it unique; ``O_EXCL`` makes sure)."""
        name = os.path.join(folder, f".{sop_uid}.{os.getpid()}-{next(self._names)}.part")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644), name
        except FileExistsError:  # left by an earlier process of the same id
            return tempfile.mkstemp(prefix=f".{sop_uid}.", suffix=".part", dir=folder)

    def done(self, sop_uid: str) -> bool:
        with self.lock:
            rec = self.records.get(sop_uid)
            return rec is not None and rec["status"] in _COMPLETE

    def record(self, row: dict[str, Any], persist: bool) -> bool:
        """Keep ``row``; False if the instance was already complete (a duplicate part)."""
        with self.lock:
            old = self.records.get(row["sop_uid"])
            if old is not None and old["status"] in _COMPLETE:
                return False
            self.records[row["sop_uid"]] = row
            if persist and self.sidecar is not None:
                self.sidecar.write(_sidecar_line(row))  # flushed as its buffer fills
        self.progress.add_instances(1, row["sop_uid"])
        return True

    def close(self) -> None:
        if self.sidecar is not None:
            self.sidecar.close()
        if self.directory is not None:
            with contextlib.suppress(OSError):
                (self.directory / ".s4s-tmp").rmdir()
        self.progress.close()


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """``data`` into the file ``fd`` (``os.write`` may write less than asked, e.g. after a signal)."""
    n = os.write(fd, data)
    if n < len(data):
        view = memoryview(data)[n:]
        while view:
            view = view[os.write(fd, view):]


class _PartWriter:
    """One multipart part on its way to disk or memory.

    To disk: the first bytes are held until they show the file's UIDs (:func:`_header_from_head`), which
    are checked before anything is written: a part of another series fails the request, one not asked
    for or already complete is skipped unwritten. The file is then written, hashed as it goes, to a
    hidden temporary name in its final folder and renamed into place when the part ends (atomic: a file
    under its SOP Instance UID is always complete). Headers the fast reader leaves to pydicom take the
    slower path: a temporary file under ``.s4s-tmp``, read by :func:`_read_header` at the end.
    """

    def __init__(self, run: _Run, unit: _Unit) -> None:
        self.run, self.unit = run, unit
        self.size = 0
        self.to_disk = run.directory is not None
        self.hash = CHECKSUMS[run.checksum]() if self.to_disk else None
        self.head = bytearray()  # the first bytes of a file: enough for its UIDs
        self.header: _Header | None = None  # known before writing (fast path)
        self.skip = False  # not asked for, or already complete: nothing is written
        self.tmp: str | None = None
        #: the temporary file, written with ``os.write`` (a Python file object per part was 5% of a
        #: download of 400 files of 32 KiB: its creation, its buffer, its close)
        self.fd: int | None = None
        self.opened = False
        #: in memory: a part that came in one piece is read where it is (a view of the chunk received);
        #: one in several pieces gathers in its thread's buffer (reused part after part, so its pages are
        #: not faulted in again); either is read once by :func:`~s4s_jupyter.client.part10.read_part10`
        #: (issue 5: a fresh ``BytesIO`` per part copied each byte twice into new memory)
        self.buf: bytearray | None = None if self.to_disk else run.part_buffer()
        self.piece: bytes | memoryview | None = None

    def write(self, data: bytes | memoryview) -> None:
        start = self.size
        self.size += len(data)
        if self.buf is not None:
            if start == 0:
                self.piece = data
                return
            if self.piece is not None:  # a second piece: both go to the buffer
                self.buf[:start] = self.piece
                self.piece = None
            self.buf[start:self.size] = data  # in place once the buffer has grown to the largest part
            return
        if not self.opened:
            if self.skip:
                return
            if not self.head and len(data) >= _HEAD_BYTES:
                self._open(data)  # the first piece holds the head: used as it is, no copy
                return
            self.head += data
            if len(self.head) >= _HEAD_BYTES:
                self._open(bytes(self.head))
            return
        assert self.fd is not None
        _write_all(self.fd, data)
        if self.hash is not None:
            self.hash.update(data)

    def _open(self, head: bytes | memoryview) -> None:
        """Decide where the part goes from its first bytes (``head``), and write them there."""
        assert self.run.directory is not None
        header = _header_from_head(memoryview(head)[:_HEAD_BYTES])  # a view: no copy
        if header is not None:
            if not self._wanted(header):
                self.skip = True
                self.head = bytearray()
                return
            self.header = header
            fd, name = self.run.temporary(self._folder(header), header.sop_uid)
            self.head = bytearray()
        else:  # pydicom decides at the end, from the head kept and the file
            fd, name = tempfile.mkstemp(suffix=".part", dir=self.run.directory / ".s4s-tmp")
            self.head = bytearray(head)
        self.tmp = name
        self.fd, self.opened = fd, True  # closed in finish() or abort()
        _write_all(fd, head)
        assert self.hash is not None
        self.hash.update(head)

    def _wanted(self, header: _Header) -> bool:
        """Raise for a part that does not belong to the request; False for one to skip."""
        target = self.unit.target
        sop = header.sop_uid
        if not is_valid_uid(sop) or header.study_uid != target.study_uid or \
                header.series_uid != target.series_uid:
            self.abort()
            raise ClientError(f"{self.unit.url}: the server sent an instance of another series or with an "
                              f"invalid SOP Instance UID ({sop[:70]!r})", status=502)
        if (self.unit.sop_uid and sop != self.unit.sop_uid) or (target.only and sop not in target.only):
            return False
        return not self.run.done(sop)

    def _folder(self, header: _Header) -> str:
        """``{directory}/{PatientID}/{StudyUID}/{SeriesUID}``, created the first time (plain strings:
        this runs for every file)."""
        target = self.unit.target
        key = (header.patient_id or target.patient or "unknown", target.study_uid, target.series_uid)
        folder = self.run.folders.get(key)
        if folder is None:
            assert self.run.directory is not None
            folder = os.path.join(self.run.directory, safe_name(key[0]), key[1], key[2])
            os.makedirs(folder, exist_ok=True)
            self.run.sweep(folder)
            self.run.folders[key] = folder
        return folder

    def _close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def abort(self) -> None:
        self.buf = None
        self._close()
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
            self.tmp = None

    def finish(self) -> None:
        from pydicom.errors import InvalidDicomError

        if self.to_disk and not self.opened and not self.skip:
            self._open(bytes(self.head))  # a part shorter than the head
        if self.skip:
            return
        target = self.unit.target
        header = self.header
        ds = None
        try:
            if self.buf is not None:
                from s4s_jupyter.client.part10 import read_part10

                ds = read_part10(memoryview(self.piece if self.piece is not None else self.buf)[:self.size])
                self.buf = self.piece = None
                header = _Header.of(ds)  # checked below, like the UIDs on the way to disk
            else:
                assert self.opened
                if header is None:
                    assert self.tmp is not None
                    self._close()
                    header = _read_header(bytes(self.head), Path(self.tmp))
        except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
            self.abort()
            raise ClientError(f"{self.unit.url}: a part is not a DICOM file ({exc})", status=502) from exc
        if self.header is None and not self._wanted(header):
            self.abort()  # not asked for, or already complete (a retried series)
            return
        sop = header.sop_uid
        row: dict[str, Any] = {
            "patient": target.patient, "fhir_study": target.fhir_study, "study_uid": target.study_uid,
            "series_uid": target.series_uid, "sop_uid": sop, "instance_number": header.instance_number,
            "patient_id": header.patient_id or None, "path": None, "size": self.size, "checksum": None,
            "status": "loaded", "error": None,
        }
        if self.tmp is not None and self.hash is not None:
            self._close()
            path = os.path.join(self._folder(header), f"{sop}.dcm")
            os.replace(self.tmp, path)
            self.tmp = None
            row.update(path=path, checksum=f"{self.run.checksum}:{self.hash.hexdigest()}",
                       status="downloaded")
            self.run.record(row, persist=True)
        elif self.run.record(row, persist=False) and ds is not None:
            with self.run.lock:
                self.run.datasets[sop] = ds


class Retriever:
    """Streams WADO-RS answers to disk or into pydicom, in parallel, resumably.

    - ``auth``: what requests to endpoints with ``requires_access_token`` carry (a
      :class:`~s4s_jupyter.client.auth.BearerAuth`); others get no ``Authorization`` header at all.
    - ``connections_per_host``: how many requests run at once against one host.
    - ``max_attempts``: tries per request (429/503 honour ``Retry-After`` up to ``max_retry_after`` s).
    - ``split_series``: when a retrieval has fewer whole series than connections, fetch their instances
      one request each, so every connection has work. Off by default: against this project's PACS on
      loopback, a 2-series study (240 instances) took 0.26 s as two series requests and 0.48 s as 240
      instance requests on 4 connections; a server whose single stream is slow (a distant one) may gain.
    """

    def __init__(self, *, auth: httpx.Auth | None = None, connections_per_host: int = 4,
                 timeout: float = 120.0, max_attempts: int = 5, max_retry_after: float = 300.0,
                 backoff: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                 split_series: bool = False) -> None:
        if connections_per_host < 1:
            raise ValueError("connections_per_host must be at least 1")
        self.auth = auth
        self.connections_per_host = connections_per_host
        self.max_attempts = max_attempts
        self.max_retry_after = max_retry_after
        self.backoff = backoff
        self._sleep = sleep
        self.split_series = split_series
        self.http = StreamingHTTP(timeout=timeout, maxsize=connections_per_host)
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._hosts_lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ----------------------------------------------------------------------------------------

    def _auth_for(self, endpoint: DICOMwebEndpoint) -> httpx.Auth | None:
        if not endpoint.requires_access_token:
            return None  # no token leaves for an endpoint that does not ask for it
        if self.auth is None:
            raise ClientError(f"{endpoint.address} requires an access token and this client has none; "
                              "log in first", status=401)
        return self.auth

    def _host(self, url: str) -> threading.BoundedSemaphore:
        netloc = urlsplit(url).netloc
        with self._hosts_lock:
            if netloc not in self._hosts:
                self._hosts[netloc] = threading.BoundedSemaphore(self.connections_per_host)
            return self._hosts[netloc]

    def _delay(self, response: Response | None, attempt: int) -> float:
        retry = RetryPolicy(self.max_attempts, self.max_retry_after, self.backoff)
        return retry.delay(response.status if response is not None else None,
                           response.headers.get("Retry-After") if response is not None else None, attempt)

    @contextlib.contextmanager
    def _get(self, url: str, endpoint: DICOMwebEndpoint, accept: str,
             params: Mapping[str, str] | None = None) -> Iterator[Response]:
        """GET with retries; yields a streaming 2xx response. Raises :class:`ClientError` otherwise.

        An exception while the caller reads the stream (a broken connection) is the caller's to retry;
        the connection is then closed rather than reused.
        """
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        last = ""
        for attempt in range(self.max_attempts):
            response: Response | None = None
            with self._host(url):
                try:
                    response = self.http.get(url, {"Accept": accept}, self._auth_for(endpoint))
                except TRANSPORT_ERRORS as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if response is not None:
                    if response.status < 300:
                        complete = False
                        try:
                            yield response
                            complete = True
                        finally:
                            done(response, complete)
                        return
                    try:
                        body = (response.data or b"")[:500].decode("utf-8", "replace")
                    except TRANSPORT_ERRORS as exc:
                        body = f"({type(exc).__name__})"
                    done(response)
                    last = f"{response.status} {body}"
                    if response.status not in RETRY_STATUSES:
                        raise ClientError(f"GET {url} answered {last}", status=response.status, body=body)
            if attempt + 1 < self.max_attempts:
                self._sleep(self._delay(response, attempt))
        raise ClientError(f"GET {url} failed after {self.max_attempts} attempts: {last}", status=502)

    def qido(self, endpoint: DICOMwebEndpoint, path: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """A QIDO-RS query (PS3.18 10.6): the JSON array, ``[]`` for 204."""
        with self._get(f"{endpoint.address}/{path}", endpoint, "application/dicom+json", params) as r:
            if r.status == 204:
                return []
            data = json.loads(r.read() or b"[]")
        if not isinstance(data, list):
            raise ClientError(f"QIDO-RS {path} did not answer a JSON array", status=502)
        return data

    def rendered(self, target: SeriesTarget, sop_uid: str, size: int | None = None,
                 media_type: str = "image/png") -> bytes:
        """A rendered instance (PS3.18 10.4.1.1.4), scaled into ``size`` x ``size`` (``viewport``, 8.3.5.1.3).

        The comma of ``viewport`` is sent literally: Orthanc 1.10 refuses it percent-encoded (as
        ``requests``, and so dicomweb-client, always sends it).
        """
        url = f"{target.url}/instances/{check_uid(sop_uid, 'SOPInstanceUID')}/rendered"
        if size is not None:
            url += f"?viewport={int(size)},{int(size)}"
        with self._get(url, target.endpoint, media_type) as response:
            return response.read()

    # -- planning ------------------------------------------------------------------------------------

    def resolve(self, targets: Sequence[SeriesTarget]) -> list[SeriesTarget]:
        """Targets with their instance lists (QIDO-RS for those the ImagingStudy did not list, several
        at once within the per-host bound)."""
        def resolved(t: SeriesTarget) -> SeriesTarget:
            return t if t.instances is not None else replace(t, instances=qido_instances(self.qido, t))

        asking = sum(t.instances is None for t in targets)
        if asking < 2:
            return [resolved(t) for t in targets]
        with ThreadPoolExecutor(max_workers=min(asking, self.connections_per_host),
                                thread_name_prefix="s4s-qido") as pool:
            return list(pool.map(resolved, targets))

    def _units(self, targets: Sequence[SeriesTarget], first_only: bool,
               complete: Callable[[str], bool]) -> list[_Unit]:
        units: list[_Unit] = []
        for t in targets:
            pending = [i for i in _chosen(t, first_only) if not complete(i.sop_uid)]
            if not pending:
                continue
            whole = len(pending) == len(t.instances or ()) and not first_only and t.only is None
            units.append(_Unit(t) if whole else _Unit(t, pending[0].sop_uid))
            if not whole:
                units.extend(_Unit(t, i.sop_uid) for i in pending[1:])
        series_units = [u for u in units if u.sop_uid is None]
        # few series: split them into instances so every connection has work (if asked to)
        if self.split_series and series_units and len(units) < self.connections_per_host:
            split: list[_Unit] = []
            for u in units:
                expected = u.target.expected() or ()
                split.extend([_Unit(u.target, i.sop_uid) for i in expected] if u.sop_uid is None
                             and len(expected) > 1 else [u])
            units = split
        return units

    # -- running -------------------------------------------------------------------------------------

    def _run_unit(self, run: _Run, unit: _Unit) -> None:
        """Fetch one unit, retrying (parts already complete are not written twice)."""
        for attempt in range(self.max_attempts):
            part: _PartWriter | None = None
            finishing: _PartWriter
            try:
                with self._get(unit.url, unit.target.endpoint, ACCEPT_DICOM) as response:
                    media, params = parse_content_type(response.headers.get("Content-Type", ""))
                    if media == "application/dicom":  # a single part, sent bare
                        part = _PartWriter(run, unit)
                        for chunk in response.stream(_CHUNK_BYTES):
                            part.write(chunk)
                            run.progress.add_bytes(len(chunk))
                        finishing, part = part, None
                        finishing.finish()
                        return
                    if media != "multipart/related" or "boundary" not in params:
                        raise ClientError(f"GET {unit.url}: unexpected Content-Type {media!r}", status=502)
                    parser = MultipartParser(params["boundary"], views=True, lengths=True)
                    for chunk in response.stream(_CHUNK_BYTES):
                        if run.cancelled.is_set():
                            raise ClientError("cancelled", status=499)
                        run.progress.add_bytes(len(chunk))
                        for event in parser.feed(chunk):
                            if isinstance(event, PartData):
                                assert part is not None
                                part.write(event.data)
                            elif isinstance(event, PartStart):
                                part = _PartWriter(run, unit)
                            elif isinstance(event, PartEnd):
                                assert part is not None
                                finishing, part = part, None
                                finishing.finish()
                    parser.close()
                    return
            except (TransportError, MultipartError) as exc:
                if part is not None:
                    part.abort()
                if attempt + 1 >= self.max_attempts:
                    raise ClientError(f"GET {unit.url}: {exc}", status=502) from exc
                self._sleep(self._delay(None, attempt))
            except BaseException:
                if part is not None:
                    part.abort()
                raise

    def _execute(self, run: _Run, units: Sequence[_Unit]) -> dict[tuple[str, str], str]:
        """Run the units in parallel; return errors by (study, series)."""
        errors: dict[tuple[str, str], str] = {}
        hosts = {urlsplit(u.url).netloc for u in units}
        workers = max(1, min(len(units), self.connections_per_host * max(1, len(hosts))))

        def work(unit: _Unit) -> None:
            try:
                self._run_unit(run, unit)
            except ClientError as exc:
                key = (unit.target.study_uid, unit.target.series_uid)
                with run.lock:
                    errors.setdefault(key, exc.message)

        if units:
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s4s-wado")
            try:
                list(pool.map(work, units))
            except BaseException:  # KeyboardInterrupt in a notebook: stop the workers promptly
                run.cancelled.set()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return errors

    def download(self, targets: Sequence[SeriesTarget], directory: str | os.PathLike[str], *,
                 first_only: bool = False, progress: bool = True,
                 on_progress: ProgressCallback | None = None, checksum: str = "crc32") -> pd.DataFrame:
        """Write the targets' instances under ``directory``; return the manifest (one row per instance:
        :data:`MANIFEST_COLUMNS`; ``status`` is ``downloaded``, ``verified`` (already complete, skipped),
        ``failed`` or ``missing`` (the server did not send it), with ``error`` saying why).

        ``progress``: the tqdm bars. ``on_progress``: called with a :class:`RetrievalProgress` once at the
        start and after every instance (from the download threads, one call at a time; an exception it
        raises stops the retrieval; its ``instances_total`` is None until the instance lists of series
        neither listed nor counted in advance came: a series with nothing recorded before is fetched
        while its list is asked for, or without it when the series query gave its count (the list is
        asked for at the end if fewer came), and if asking for a list fails the call raises after the
        series was written; the sidecar has its files, so a second call resumes). ``checksum``: what
        the manifest and the sidecar record per file, ``crc32`` (enough to find a damaged or cut file
        when resuming, and cheap) or ``sha256`` (a cryptographic digest, for provenance; about 0.05 s
        more CPU per 100 MB)."""
        if checksum not in CHECKSUMS:
            raise ValueError(f"checksum must be one of {', '.join(CHECKSUMS)}")
        root = Path(directory)
        previous = _read_sidecar(root)
        # a series of which nothing was recorded before has nothing to resume: it is fetched whole without
        # waiting for its instance list (_Listing), as in load(); the list is needed only for the manifest
        started = {rec.get("series_uid") for rec in previous.values()}
        early, later = self._split(targets, first_only, lambda t: None not in started
                                   and t.series_uid not in started)
        with _Listing(self, early) as listing:
            resolved = dict(zip(later, self.resolve(later), strict=True))
            expected = {t: _chosen(t, first_only) for t in resolved.values()}
            count = sum(len(v) for v in expected.values())
            run = _Run(root, _Progress(progress, listing.total(count), "instances", on_progress), checksum)
            listing.report_total(run.progress, count)
            errors = self._download(run, previous, expected, first_only, early)
            resolved.update(listing.result(run.records))
        expected = {t: _chosen(t, first_only) for t in (resolved[t] for t in dict.fromkeys(targets))}
        return _manifest(run, expected, errors)

    def _split(self, targets: Sequence[SeriesTarget], first_only: bool,
               eligible: Callable[[SeriesTarget], bool]) -> tuple[list[SeriesTarget], list[SeriesTarget]]:
        """The distinct ``targets`` as (early, later): early ones are fetched as whole series without
        waiting for their instance lists (:class:`_Listing`: counted, or listed meanwhile); later ones are
        listed first. A target is early when its list is not known, it is wanted whole, and
        ``eligible(target)`` (download: nothing of it to resume)."""
        early: list[SeriesTarget] = []
        later: list[SeriesTarget] = []
        for t in dict.fromkeys(targets):
            whole = t.instances is None and t.only is None and not first_only and not self.split_series
            (early if whole and eligible(t) else later).append(t)
        return early, later

    def _download(self, run: _Run, previous: Mapping[str, Mapping[str, Any]],
                  expected: Mapping[SeriesTarget, Sequence[InstanceInfo]], first_only: bool,
                  early: Sequence[SeriesTarget]) -> dict[tuple[str, str], str]:
        """Skip what an earlier call completed and verified, then fetch the rest (``expected``: series
        with known instance lists; ``early``: whole series whose lists are still being asked for)."""
        root = run.directory
        assert root is not None
        try:
            swept: set[str] = set()
            for t, infos in expected.items():
                for info in infos:
                    rec = previous.get(info.sop_uid)
                    folder = os.path.dirname(str(rec.get("path") or "")) if rec else ""
                    if folder and folder not in swept:  # also folders where nothing is left to fetch
                        swept.add(folder)
                        if Path(folder).resolve().is_relative_to(root.resolve()):
                            run.sweep(folder)
                    row = _verified(rec, root, t, info)
                    if row is not None:
                        run.records[info.sop_uid] = row
                        run.progress.add_instances(1, info.sop_uid)
            units = [*self._units(list(expected), first_only, run.done), *map(_Unit, early)]
            return self._execute(run, units)
        finally:
            run.close()

    def load(self, targets: Sequence[SeriesTarget], *, first_only: bool = False,
             progress: bool = True, on_progress: ProgressCallback | None = None) -> list[Dataset]:
        """The targets' instances as pydicom Datasets, in series then instance-number order
        (``on_progress``: see :meth:`download`; its ``instances_total`` is None until the instance lists
        of series neither listed nor counted in advance came, which are asked for while those series
        are fetched).

        Raises :class:`ClientError` if any series failed (nothing partial is returned silently).
        """
        targets = list(targets)
        # whole series whose instance lists are not known yet are fetched without waiting for them
        # (_Listing): the lists, or the counts, are needed only at the end, to check that every instance came
        early, later = self._split(targets, first_only, lambda t: True)
        with _Listing(self, early) as listing:
            resolved = dict(zip(later, self.resolve(later), strict=True))
            count = sum(len(_chosen(t, first_only)) for t in resolved.values())
            run = _Run(None, _Progress(progress, listing.total(count), "instances", on_progress))
            listing.report_total(run.progress, count)
            try:
                units = [*self._units(list(resolved.values()), first_only, run.done), *map(_Unit, early)]
                errors = self._execute(run, units)
                resolved.update(listing.result(run.records))
            finally:
                run.close()
        targets = [resolved[t] for t in targets]
        expected = {t: _chosen(t, first_only) for t in targets}
        if errors:
            (_study, series), message = next(iter(errors.items()))
            raise ClientError(f"{len(errors)} series failed; series {series}: {message}", status=502)
        missing = [i.sop_uid for infos in expected.values() for i in infos if i.sop_uid not in run.datasets]
        if missing:
            raise ClientError(f"the server did not send {len(missing)} instance(s), e.g. {missing[0]}",
                              status=502)
        return [run.datasets[i.sop_uid] for infos in expected.values() for i in infos]


_quote = json.encoder.encode_basestring_ascii  # the C function json.dumps quotes strings with


def _sidecar_line(row: Mapping[str, Any]) -> bytes:
    """One JSON line of the sidecar: the same object ``json.dumps`` writes, without building an encoder
    per call (``json.dumps`` made one per file: 5% of a 200-file download's Python time)."""
    return (f'{{"study_uid": {_quote(row["study_uid"])}, "series_uid": {_quote(row["series_uid"])}, '
            f'"sop_uid": {_quote(row["sop_uid"])}, "path": {_quote(row["path"])}, '
            f'"size": {int(row["size"])}, "checksum": {_quote(row["checksum"])}}}\n').encode("ascii")


def _read_sidecar(root: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    try:
        with (root / MANIFEST_FILE).open("rb") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(rec, dict) and isinstance(rec.get("sop_uid"), str):
                    records[rec["sop_uid"]] = rec
    except FileNotFoundError:
        pass
    return records


def _verified(rec: Mapping[str, Any] | None, root: Path, target: SeriesTarget,
              info: InstanceInfo) -> dict[str, Any] | None:
    """A manifest row for an instance already on disk, if its size and checksum match the sidecar
    (``checksum`` as ``{algorithm}:{hex}``; lines written before it existed have ``sha256``)."""
    if rec is None or rec.get("study_uid") != target.study_uid or rec.get("series_uid") != target.series_uid:
        return None
    recorded = rec.get("checksum") or (f"sha256:{rec['sha256']}" if rec.get("sha256") else None)
    algorithm = str(recorded).split(":", 1)[0]
    if algorithm not in CHECKSUMS:
        return None
    path = Path(str(rec.get("path")))
    try:
        path.relative_to(root)
        if path.stat().st_size != rec.get("size") or checksum_file(path, algorithm) != recorded:
            return None
    except (OSError, ValueError):
        return None
    return {"patient": target.patient, "fhir_study": target.fhir_study, "study_uid": target.study_uid,
            "series_uid": target.series_uid, "sop_uid": info.sop_uid, "instance_number": info.number,
            "patient_id": path.parent.parent.parent.name, "path": str(path), "size": rec["size"],
            "checksum": recorded, "status": "verified", "error": None}


def _chosen(target: SeriesTarget, first_only: bool) -> tuple[InstanceInfo, ...]:
    """The instances of ``target`` a call asks for (its first only, with ``first_only``)."""
    expected = target.expected() or ()
    return expected[:1] if first_only else expected


class _Listing:
    """What is needed to know that whole series fetched without their instance lists (``early``) came
    complete. A series whose count is known (:attr:`SeriesTarget.count`: the imaging server's Number of
    Series Related Instances) needs nothing more when as many of its instances came; only a series that
    came short is listed, at the end, to name what is missing.
    The lists of series without a count are asked for (QIDO-RS) in a thread of their own while the series
    are fetched (issue 5: the round trips had come first, about 10% of a 105 MB study's time; asked for
    meanwhile, the two lists of a 2-series study still cost 12-14 ms of a 27 MB study's 70-80)."""

    def __init__(self, retriever: Retriever, early: Sequence[SeriesTarget]) -> None:
        self.retriever = retriever
        self.counted = [t for t in early if t.count is not None]
        self.asked = [t for t in early if t.count is None]
        self.counted_total = sum(t.count for t in self.counted if t.count is not None)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s4s-list") if self.asked else None
        self._lists = self._pool.submit(retriever.resolve, self.asked) if self._pool is not None else None

    def total(self, known: int) -> int | None:
        """How many instances the call will have: ``known`` (listed before) and the early series' counts;
        None while lists are still asked for."""
        return None if self._lists is not None else known + self.counted_total

    def report_total(self, progress: _Progress, known: int) -> None:
        """Set ``progress``'s total once the lists asked for came (:meth:`total` gave None)."""
        if self._lists is None:
            return
        known += self.counted_total

        def total(f: Future[list[SeriesTarget]]) -> None:
            if f.exception() is None:
                progress.set_total(known + sum(len(t.expected() or ()) for t in f.result()))

        self._lists.add_done_callback(total)

    def result(self, records: Mapping[str, Mapping[str, Any]]) -> dict[SeriesTarget, SeriesTarget]:
        """Each early target -> the same target with its instance list (``records``: the call's, by SOP
        Instance UID): a counted series of which at least as many instances came has the list of those;
        any other, the server's (waits for the lists asked for; asks for those of series that came short)."""
        out: dict[SeriesTarget, SeriesTarget] = {}
        if self._lists is not None:
            out.update(zip(self.asked, self._lists.result(), strict=True))
        if not self.counted:
            return out
        came: dict[tuple[str, str], list[InstanceInfo]] = {}
        for rec in records.values():
            if rec["status"] in _COMPLETE:
                came.setdefault((rec["study_uid"], rec["series_uid"]), []).append(
                    InstanceInfo(rec["sop_uid"], rec["instance_number"]))
        short: list[SeriesTarget] = []
        for t in self.counted:
            got = came.get((t.study_uid, t.series_uid), [])
            if len(got) >= (t.count or 0):
                out[t] = replace(t, instances=tuple(got))
            else:
                short.append(t)
        out.update(zip(short, self.retriever.resolve(short), strict=True))
        return out

    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _manifest(run: _Run, expected: Mapping[SeriesTarget, Sequence[InstanceInfo]],
              errors: Mapping[tuple[str, str], str]) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for t, infos in expected.items():
        for info in infos:
            row = run.records.get(info.sop_uid)
            if row is None:
                error = errors.get((t.study_uid, t.series_uid))
                row = {"patient": t.patient, "fhir_study": t.fhir_study, "study_uid": t.study_uid,
                       "series_uid": t.series_uid, "sop_uid": info.sop_uid, "instance_number": info.number,
                       "patient_id": None, "path": None, "size": None, "checksum": None,
                       "status": "failed" if error else "missing",
                       "error": error or "the server's answer did not include this instance"}
            rows.append(row)
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    frame["size"] = frame["size"].astype("Int64")
    frame["instance_number"] = frame["instance_number"].astype("Int64")
    return frame

