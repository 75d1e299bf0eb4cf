"""DICOM Part 10 files in memory into pydicom Datasets: what the kit's :meth:`retrieve` returns.

:func:`read_part10` gives exactly what ``pydicom.dcmread`` gives for the same bytes: a
:class:`~pydicom.dataset.FileDataset` with the same preamble, File Meta Information, encoding and
raw elements (pydicom converts each on first access, as after ``dcmread``). It reads the common case
itself and hands every other file to ``dcmread``.

Why by hand: ``dcmread`` reads a file element by element through the file object's ``read`` (two calls
per element) and a generator that handles every encoding. On a 128 KiB CT instance with 58 elements that
is about 0.25 ms of the header alone, and with the kit's reader over the part buffer (a Python ``read``,
so that the Pixel Data is copied once, straight into the ``bytes`` pydicom keeps) 0.5 ms in all: half of
the kit's CPU for a study of such instances, more than receiving it (issue 5: kit into pydicom at
0.87-0.97x dicomweb-client on 128 KiB instances). Here each element is one ``struct`` unpack over the
buffer and one copy of its value. pydicom offers no reader over a buffer.

The fast path takes files with a preamble and ``DICM``, File Meta Information in explicit VR little endian,
and a data set in explicit VR little endian (every transfer syntax but implicit VR little endian, explicit
VR big endian, deflate and the private ones pydicom knows), whose elements all carry standard VRs; a value
of undefined length is either made of items (encapsulated Pixel Data, kept raw) or a sequence, which
pydicom's own ``read_sequence`` reads as ``dcmread`` does. Anything else (an undefined-length UN, a
truncated file, a command set, no File Meta, a sequence pydicom cannot read) goes to ``dcmread``, so
its behaviour there (errors, warnings, heuristics) is pydicom's own.
"""

from __future__ import annotations

import io
import struct
from typing import Any, cast

from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filereader import read_sequence
from pydicom.tag import BaseTag
from pydicom.uid import PrivateTransferSyntaxes
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR
from pydicom.values import convert_string

_ELEMENT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<L")
_ITEM = struct.Struct("<HHL")
_UNDEFINED = 0xFFFFFFFF
_CHARSET = 0x00080005
#: transfer syntaxes whose data set is not explicit VR little endian (read by ``dcmread``)
_OTHER_ENCODINGS = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
#: b"OB" -> ("OB", whether its length field has 4 bytes): the standard VRs, as pydicom knows them
_VRS = {str(vr).encode(): (str(vr), vr in EXPLICIT_VR_LENGTH_32) for vr in VR if len(str(vr)) == 2}
#: tag number -> BaseTag, made once (an ``int`` subclass: building one per element was about 8% of the
#: reader's time on 128 KiB instances); at most ``_TAGS_KEPT`` tags, so files full of odd private tags
#: cannot grow it without end
_TAGS: dict[int, BaseTag] = {}
_TAGS_KEPT = 4096
#: a RawDataElement made without the Python-level ``__new__`` of a NamedTuple (a third of the loop)
_raw = cast(Any, tuple.__new__)


class PartReader(io.RawIOBase):
    """A read-only, seekable file over the bytes of one part, for ``dcmread``: ``read`` copies straight
    from the part's buffer into the ``bytes`` pydicom keeps (``BytesIO`` would need its own copy of the
    part first). ``close`` lets the buffer go: pydicom keeps the object it read from (``Dataset.buffer``),
    and a closed one holds nothing (the Dataset is complete without it)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view: memoryview | None = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        view = self._view
        if view is None:
            raise ValueError("read of a closed part")
        start = self._pos
        end = len(view) if size is None or size < 0 else min(len(view), start + size)
        self._pos = max(start, end)
        return view[start:end].tobytes()

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self._view is None:
            raise ValueError("seek in a closed part")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
        super().close()


def read_part10(view: memoryview) -> FileDataset:
    """The Part 10 file in ``view`` as ``dcmread`` reads it (raises what ``dcmread`` raises)."""
    with PartReader(view) as reader:
        ds = _read_fast(view, reader)
        if ds is None:
            reader.seek(0)
            ds = dcmread(reader)
    return ds


def _elements(view: memoryview, pos: int, group: int | None,
              source: PartReader) -> tuple[dict[BaseTag, Any], str | list[str], int] | None:
    """The raw elements from ``pos`` to the end (``group``: only while the tags are of that group),
    their character set (as pydicom names it) and where reading stopped; None for anything the fast
    path leaves to ``dcmread``. A sequence of
    undefined length is read as ``dcmread`` reads it, by pydicom from ``source`` (a parsed element)."""
    vrs = _VRS
    tags = _TAGS
    unpack = _ELEMENT.unpack_from
    end = len(view)
    elements: dict[BaseTag, Any] = {}
    encoding: str | list[str] = default_encoding
    while pos < end:
        if pos + 8 > end:
            return None  # a truncated element header
        g, e, raw_vr, length = unpack(view, pos)
        if g != group and group is not None:
            break
        known = vrs.get(raw_vr)
        if known is None:
            return None  # not a standard VR: pydicom's heuristics decide
        vr, long = known
        start = pos + 8
        if long:
            if start + 4 > end:
                return None
            length = _LONG.unpack_from(view, start)[0]
            start += 4
        number = g << 16 | e
        tag = tags.get(number)
        if tag is None:
            tag = BaseTag(number)
            if len(tags) < _TAGS_KEPT:
                tags[number] = tag
        if length == _UNDEFINED:
            if vr == "UN":
                return None  # pydicom's settings decide what it is
            if vr == "SQ":
                source.seek(start)
                try:
                    seq = read_sequence(cast(Any, source), False, True, length, encoding)
                except Exception:  # dcmread reads the file again and decides
                    return None
                elements[tag] = DataElement(tag, vr, seq, start, is_undefined_length=True)
                pos = source.tell()
                continue
            stop = _items_end(view, start)
            if stop is None:
                return None
            elements[tag] = _raw(RawDataElement, (tag, vr, length, view[start:stop].tobytes(), start, False,
                                                  True, True, False))
            pos = stop + 8
            continue
        stop = start + length
        if stop > end:
            return None  # a truncated value
        value = view[start:stop].tobytes() if length else empty_value_for_VR(vr, raw=True)
        if number == _CHARSET:  # Specific Character Set: how sequences after it are read
            encoding = convert_encodings(convert_string(cast(bytes, value) or b"", True))
        elements[tag] = _raw(RawDataElement, (tag, vr, length, value, start, False, True, True, False))
        pos = stop
    return elements, encoding, pos


def _items_end(view: memoryview, pos: int) -> int | None:
    """Where the Sequence Delimitation Item after the items from ``pos`` starts (an undefined-length value
    such as encapsulated Pixel Data), as pydicom finds it; None if the value is not items."""
    end = len(view)
    while pos + 8 <= end:
        g, e, length = _ITEM.unpack_from(view, pos)
        if (g, e) == (0xFFFE, 0xE0DD):
            return pos if view[pos + 4:pos + 8] == b"\0\0\0\0" else None
        if (g, e) != (0xFFFE, 0xE000) or length == _UNDEFINED:
            return None
        pos += 8 + length
    return None


def _read_fast(view: memoryview, source: PartReader) -> FileDataset | None:
    if len(view) < 132 + 8 or view[128:132] != b"DICM":
        return None
    meta = _elements(view, 132, 2, source)
    if meta is None or not meta[0]:
        return None
    meta_elements, pos = meta[0], meta[2]
    syntax = meta_elements.get(BaseTag(0x00020010))
    if syntax is None or not syntax.value:
        return None
    uid = syntax.value.rstrip(b"\0 ").decode("ascii", "replace")
    if uid in _OTHER_ENCODINGS or uid in PrivateTransferSyntaxes or pos + 8 > len(view) or \
            view[pos:pos + 2] == b"\0\0":  # a command set (group 0000)
        return None
    body = _elements(view, pos, None, source)
    if body is None:
        return None

    elements, encoding, _ = body
    # dcmread leaves the few elements it looked at while reading (the transfer syntax, the character
    # set) converted, here they stay raw: the same Dataset, each element converted on first access
    file_meta = FileMetaDataset(meta_elements)
    file_meta.set_original_encoding(False, True, default_encoding)
    ds = FileDataset(source, elements, view[:128].tobytes(), file_meta, False, True)
    ds.set_original_encoding(False, True, encoding)
    return ds
