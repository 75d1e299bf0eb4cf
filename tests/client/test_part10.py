"""The kit's Part 10 reader (what :meth:`DICOMweb.retrieve` returns) gives what ``pydicom.dcmread`` gives.

Judged against pydicom itself on every file pydicom ships for its own tests (CT, MR, RT, JPEG, RLE,
JPEG 2000, big endian, implicit VR, deflate, truncated, no preamble...) and on files made here for the
cases the fast path reads itself: encapsulated Pixel Data, sequences of undefined length inside and
after a character set, empty values, private elements. "The same" is: the same preamble, File Meta
Information, elements (raw where pydicom leaves them raw, with the same offsets; pydicom converts the
few it looks at while reading), original encoding, equality as Datasets, and the same bytes when
written back; or the same exception.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from s4s_jupyter.client import part10

PYDICOM_FILES = sorted(p for p in (Path(pydicom.__file__).parent / "data" / "test_files").rglob("*")
                       if p.is_file())
PREFIX = "1.2.826.0.1.3680043.8.498."


def outcome(read: Any, data: bytes) -> Any:
    try:
        return read(data)
    except Exception as exc:  # the same exception, or the same Dataset
        return exc


def by_pydicom(data: bytes) -> Any:
    return dcmread(io.BytesIO(data))


def by_kit(data: bytes) -> Any:
    buf = bytearray(data) + b"\xee" * 7  # the part buffer is reused: bytes beyond the part are not its
    return part10.read_part10(memoryview(buf)[:len(data)])


def written(ds: Any) -> bytes:
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def assert_same(data: bytes) -> None:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.IGNORE)
        m.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)
        ref, got = outcome(by_pydicom, data), outcome(by_kit, data)
        if isinstance(ref, Exception):
            assert type(got) is type(ref) and str(got) == str(ref)
            return
        assert not isinstance(got, Exception), got
        assert got.preamble == ref.preamble
        assert list(got.file_meta._dict) == list(ref.file_meta._dict)
        assert list(got._dict) == list(ref._dict)
        for tag, elem in ref._dict.items():
            if isinstance(elem, pydicom.dataelem.RawDataElement):
                assert got._dict[tag] == elem, tag
        assert got.original_encoding == ref.original_encoding
        assert got.original_character_set == ref.original_character_set
        assert got.file_meta == ref.file_meta and got == ref
        mine, theirs = outcome(written, got), outcome(written, ref)
        assert mine == theirs if isinstance(theirs, bytes) else type(mine) is type(theirs)


def fast(data: bytes) -> bool:
    view = memoryview(bytearray(data))
    with part10.PartReader(view) as reader:
        return part10._read_fast(view, reader) is not None


@pytest.mark.parametrize("path", PYDICOM_FILES, ids=lambda p: p.name)
def test_pydicom_test_files_read_as_dcmread_reads_them(path: Path) -> None:
    assert_same(path.read_bytes())


def test_the_fast_path_reads_most_of_pydicom_test_files() -> None:
    # the fast path is the point: a change that sent everything to dcmread would pass the test above
    readable = [p for p in PYDICOM_FILES if fast(p.read_bytes())]
    assert len(readable) >= 100, len(readable)


def instance(ts: str = ExplicitVRLittleEndian, *, pixels: bytes | None = None, charset: str | None = None,
             sequence: bool = False, empty: bool = False, private: bool = False) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(ts)
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(PREFIX)
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = "Müller^Jürgen" if charset else "Muller^Jurgen"
    ds.StudyInstanceUID = generate_uid(PREFIX)
    ds.SeriesInstanceUID = generate_uid(PREFIX)
    ds.InstanceNumber = 3
    if empty:
        ds.AccessionNumber = ""
        ds.add_new(0x00081140, "SQ", [])  # an empty sequence, defined length 0
    if private:
        ds.add_new(0x00090010, "LO", "S4S TEST")
        ds.add_new(0x00091001, "OB", b"\x01\x02" * 10)
        ds.add_new(0x00091002, "UN", b"\x03\x04")
    if sequence:
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = generate_uid(PREFIX)
        item.PatientName = "Groß^Ärger" if charset else "Gross^Aerger"
        inner = Dataset()
        inner.CodeValue = "T-1"
        item.ConceptNameCodeSequence = [inner]
        ds.ReferencedImageSequence = [item, Dataset()]
        ds["ReferencedImageSequence"].is_undefined_length = True
        ds.ReferencedImageSequence[0]["ConceptNameCodeSequence"].is_undefined_length = True
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels if pixels is not None else bytes(range(16))
    if pixels is not None:
        ds["PixelData"].is_undefined_length = True
        ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


CASES = {
    "plain": instance(),
    "undefined-length sequences": instance(sequence=True),
    "character set, then sequences": instance(charset="ISO_IR 100", sequence=True),
    "UTF-8": instance(charset="ISO_IR 192", sequence=True),
    "empty values": instance(empty=True),
    "private elements": instance(private=True),
    "encapsulated, one fragment": instance(JPEGBaseline8Bit,
                                           pixels=encapsulate([b"\xff\xd8" + b"\x10" * 30])),
    "encapsulated, offset table, fragments": instance(
        RLELossless, pixels=encapsulate([b"\x01" * 10, b"\x02" * 12], fragments_per_frame=2, has_bot=True)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_files_the_fast_path_reads(name: str) -> None:
    data = CASES[name]
    assert fast(data), name
    assert_same(data)


@pytest.mark.parametrize("cut", [131, 140, 300, -20, -1])
def test_a_truncated_file_is_read_or_refused_as_dcmread_does(cut: int) -> None:
    data = CASES["undefined-length sequences"][:cut]
    assert not fast(data)
    assert_same(data)


def test_a_damaged_encapsulation_goes_to_dcmread() -> None:
    data = bytearray(CASES["encapsulated, one fragment"])
    end = data.rindex(b"\xfe\xff\xdd\xe0")
    data[end + 4] = 1  # a Sequence Delimitation Item with a length that is not zero
    assert not fast(bytes(data))
    assert_same(bytes(data))


def test_values_are_copies_that_outlive_the_buffer() -> None:
    data = CASES["encapsulated, one fragment"]
    buf = bytearray(data)
    ds = part10.read_part10(memoryview(buf)[:len(data)])
    buf[:] = b"\0" * len(buf)  # the kit reuses the buffer for the next part
    assert ds == dcmread(io.BytesIO(data))
    assert ds.buffer is not None and ds.buffer.closed


def test_tags_are_shared_between_files_and_their_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each tag's ``BaseTag`` is made once and reused by later files; a file full of tags never seen
    before (private ones) cannot grow the cache past its bound, and still reads as ``dcmread`` reads it."""
    first = part10.read_part10(memoryview(CASES["private elements"]))
    again = part10.read_part10(memoryview(CASES["private elements"]))
    assert all(a is b for a, b in zip(first._dict, again._dict, strict=True))

    monkeypatch.setattr(part10, "_TAGS_KEPT", len(part10._TAGS) + 5)
    ds = pydicom.dcmread(io.BytesIO(CASES["private elements"]))
    ds.add_new(0x00110010, "LO", "S4S MANY")
    for n in range(200):
        ds.add_new(0x00111000 + n, "LO", f"value {n}")
    out = io.BytesIO()
    ds.save_as(out)
    assert_same(out.getvalue())
    assert len(part10._TAGS) <= part10._TAGS_KEPT
