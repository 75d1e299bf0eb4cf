"""``multipart/related`` (RFC 2387) as DICOMweb uses it (PS3.18 8.7.1.2 and 8.6.1.2).

A writer for servers that stream parts, and an incremental parser for bodies that arrive in chunks
(STOW-RS uploads, WADO-RS downloads of whole studies) so neither side holds a study in memory.
Hand-written because the standard library's ``email`` parser needs the whole body in memory and the
multipart libraries on PyPI target ``multipart/form-data``.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message

CRLF = b"\r\n"


def new_boundary() -> str:
    """A random boundary that will not occur in DICOM content by chance."""
    return "s4s-" + secrets.token_hex(16)


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type (or Accept item) into its lower-case media type and parameters.

    Quoted parameter values are unquoted (``type="application/dicom"``). Parameter names are lower-cased.
    """
    media, params = _parse_content_type(value)
    return media, dict(params)


@functools.lru_cache(maxsize=256)
def _parse_content_type(value: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    # the email package's parser is exact but slow (4% of a STOW-RS request's CPU, one call per part);
    # a server sees few distinct values, so answers are cached (immutable: callers get a fresh dict)
    msg = Message()
    msg["content-type"] = value
    media = msg.get_content_type()  # falls back to text/plain for garbage
    if "/" not in value.split(";", 1)[0]:
        media = ""
    return media, tuple((k.lower(), str(v)) for k, v in msg.get_params(failobj=[])[1:])


def related_content_type(boundary: str, part_type: str, **params: str) -> str:
    """The ``Content-Type`` of a ``multipart/related`` body whose parts are of ``part_type``."""
    extra = "".join(f'; {k.replace("_", "-")}={v}' for k, v in params.items())
    return f'multipart/related; type="{part_type}"; boundary={boundary}{extra}'


def part_head(boundary: str, content_type: str, *, first: bool = False,
              headers: dict[str, str] | None = None) -> bytes:
    """The delimiter and headers that open one part (the preceding part's trailing CRLF included)."""
    lines = [("" if first else "\r\n") + f"--{boundary}", f"Content-Type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    """The close delimiter of the body."""
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


def encode_parts(parts: list[tuple[str, bytes]], boundary: str | None = None) -> tuple[bytes, str]:
    """Encode small ``(content_type, payload)`` parts into one body; returns ``(body, boundary)``."""
    b = boundary or new_boundary()
    chunks = []
    for i, (ctype, payload) in enumerate(parts):
        chunks += [part_head(b, ctype, first=i == 0), payload]
    chunks.append(closing(b))
    return b"".join(chunks), b


class MultipartError(ValueError):
    """A body that is not well-formed ``multipart/related``."""


@dataclass
class PartStart:
    headers: dict[str, str]  # names lower-cased


@dataclass
class PartData:
    data: bytes | memoryview  # memoryview with ``MultipartParser(views=True)``


@dataclass
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


@dataclass
class MultipartParser:
    """Incremental parser: ``feed(chunk)`` yields events; ``close()`` checks the body ended properly.

    Memory is bounded by the chunk size plus the boundary length, whatever the size of a part. Inside a
    part, a chunk without a delimiter is passed on as it is (no copy): what a WADO-RS download spends
    most of its time on.
    """

    boundary: str
    max_header_bytes: int = 16384
    #: yield a part's bytes as ``memoryview`` slices of the chunk fed (no copy; they keep the chunk
    #: alive) instead of ``bytes`` copies of those slices
    views: bool = False
    #: a part with a ``Content-Length`` header is taken by its length, the delimiter checked where it
    #: must follow (a mismatch is an error), instead of searched for through the part's bytes: the
    #: search was 10-12 ms of CPU for a 27 MB study of 200 parts (``bytes.find`` at about 2 GB/s here)
    lengths: bool = False
    _buf: bytearray = field(default_factory=bytearray)
    _state: str = "preamble"  # preamble | after_delim | headers | body | epilogue
    _in_part: bool = False
    _remaining: int | None = None  # bytes of the current part still to come, when its length is known

    def __post_init__(self) -> None:
        if not self.boundary or len(self.boundary) > 200:
            raise MultipartError("missing or oversized multipart boundary")
        self._dash = b"--" + self.boundary.encode("latin-1")
        self._delim = CRLF + self._dash

    def feed(self, chunk: bytes) -> Iterator[Event]:
        """The events ``chunk`` completes. Works on the chunk in place: only what may continue in the next
        chunk (a partial delimiter or header block, at most a few hundred bytes) is kept, so the bytes of
        a part are copied at most once, and a chunk wholly inside a part is passed on as it is."""
        data = chunk if isinstance(chunk, bytes) else bytes(chunk)
        if self._buf:
            data = bytes(self._buf) + data
            self._buf.clear()
        pos, n = 0, len(data)
        delim = self._delim
        piece = memoryview(data) if self.views else data
        while True:
            if self._state == "body" and self._remaining is not None:
                take = min(self._remaining, n - pos)
                if take:
                    yield PartData(piece if pos == 0 and take == n else piece[pos:pos + take])
                    pos += take
                    self._remaining -= take
                if self._remaining:
                    return  # the chunk ended inside the part
                if n - pos < len(delim):
                    self._buf += data[pos:]
                    return
                if not data.startswith(delim, pos):
                    raise MultipartError("a part does not end where its Content-Length says")
                pos += len(delim)
                self._remaining = None
                self._in_part = False
                self._state = "after_delim"
                yield PartEnd()
            elif self._state == "body":
                i = data.find(delim, pos)
                if i < 0:
                    end = n - self._partial_delimiter(data, pos)
                    if end > pos:
                        yield PartData(piece if pos == 0 and end == n else piece[pos:end])
                    self._buf += data[end:]
                    return
                if i > pos:
                    yield PartData(piece[pos:i])
                pos = i + len(delim)
                self._in_part = False
                self._state = "after_delim"
                yield PartEnd()
            elif self._state == "preamble":
                # the first delimiter may start the body, or follow a preamble line
                if data.startswith(self._dash, pos):
                    pos += len(self._dash)
                    self._state = "after_delim"
                    continue
                i = data.find(delim, pos)
                if i < 0:
                    self._buf += data[max(pos, n - len(delim)):]
                    return
                pos = i + len(delim)
                self._state = "after_delim"
            elif self._state == "after_delim":
                if n - pos < 2:
                    self._buf += data[pos:]
                    return
                if data.startswith(b"--", pos):
                    self._state = "epilogue"
                    continue
                # transport padding (spaces/tabs) may precede the CRLF
                j = data.find(CRLF, pos)
                if j < 0:
                    if n - pos > 1024:
                        raise MultipartError("malformed delimiter line")
                    self._buf += data[pos:]
                    return
                if data[pos:j].strip(b" \t"):
                    raise MultipartError("malformed delimiter line")
                pos = j + 2
                self._state = "headers"
            elif self._state == "headers":
                if data.startswith(CRLF, pos):  # a part without headers
                    pos += 2
                    self._in_part = True
                    self._state = "body"
                    yield PartStart({})
                    continue
                j = data.find(b"\r\n\r\n", pos)
                if j < 0:
                    if n - pos > self.max_header_bytes:
                        raise MultipartError("part headers too large")
                    self._buf += data[pos:]
                    return
                headers = _parse_headers(data[pos:j])
                pos = j + 4
                self._in_part = True
                self._state = "body"
                length = headers.get("content-length", "") if self.lengths else ""
                self._remaining = int(length) if length.isascii() and length.isdigit() else None
                yield PartStart(headers)
            else:  # epilogue: ignored
                return

    def _partial_delimiter(self, data: bytes, start: int) -> int:
        """How many bytes at the end of ``data[start:]`` could be the start of a delimiter that the next
        chunk completes (0 in the common case: no CR among the last ``len(delimiter) - 1`` bytes)."""
        delim = self._delim
        j = data.find(b"\r", max(start, len(data) - len(delim) + 1))
        while j >= 0:
            if delim.startswith(data[j:]):
                return len(data) - j
            j = data.find(b"\r", j + 1)
        return 0

    def close(self) -> None:
        """Raise :class:`MultipartError` unless the close delimiter was seen."""
        if self._state != "epilogue":
            raise MultipartError("multipart body ended before its close delimiter")


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MultipartError(f"malformed part header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def iter_parts(body: bytes, boundary: str) -> Iterator[tuple[dict[str, str], bytes]]:
    """Parse a whole in-memory body into ``(headers, payload)`` pairs."""
    parser = MultipartParser(boundary)
    headers: dict[str, str] = {}
    data: list[bytes | memoryview] = []
    for event in parser.feed(body):
        if isinstance(event, PartStart):
            headers, data = event.headers, []
        elif isinstance(event, PartData):
            data.append(event.data)
        else:
            yield headers, b"".join(data)
    parser.close()
