"""The body of a streamed answer as a list of segments (PS3.18 8.7.1.2 multipart bodies, mostly).

A segment is bytes (multipart delimiters, small values), a byte range of a stored file, or a callable that
produces bytes when its turn comes (a transcoded instance, a decoded frame). The sender reads them in
blocks, so a study of any size is never held in memory; when no segment is computed lazily the total
length, and so the Content-Length, is known before the first byte is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileRange:
    path: Path
    offset: int
    length: int


Segment = bytes | FileRange | Callable[[], bytes]


def known_length(segments: list[Segment]) -> int | None:
    """The total size when no segment is computed lazily."""
    total = 0
    for s in segments:
        if isinstance(s, bytes):
            total += len(s)
        elif isinstance(s, FileRange):
            total += s.length
        else:
            return None
    return total


def iter_blocks(segments: list[Segment], block: int) -> Generator[bytes, None, None]:
    """Produce the segments' bytes in blocks of about ``block`` bytes (small pieces are coalesced, large
    files are read in ``block``-sized reads). Blocking: run each ``next()`` in a worker thread."""
    pieces: list[bytes] = []  # small pieces waiting to be sent together
    pending = 0
    for seg in segments:
        if isinstance(seg, FileRange):
            with open(seg.path, "rb", buffering=0) as f:
                f.seek(seg.offset)
                left = seg.length
                while left > 0:
                    data = f.read(min(left, block))
                    if not data:
                        raise OSError(f"stored file {seg.path.name} is shorter than indexed")
                    left -= len(data)
                    if pending + len(data) >= block and pieces:
                        pieces.append(data)
                        yield b"".join(pieces)
                        pieces, pending = [], 0
                    elif len(data) >= block:
                        yield data  # large reads go out as they are, without a copy
                    else:
                        pieces.append(data)
                        pending += len(data)
            continue
        data = seg if isinstance(seg, bytes) else seg()
        pieces.append(data)
        pending += len(data)
        if pending >= block:
            yield b"".join(pieces)
            pieces, pending = [], 0
    if pieces:
        yield b"".join(pieces)
