"""Checking an uploaded object before it is stored (STOW-RS, PS3.18 10.5; Part 10 files, PS3.10 7).

pydicom parses what it can and silently stops at the end of a truncated file, so acceptance takes more
than a successful ``dcmread``:

- the object is a Part 10 file (128-byte preamble, ``DICM``, a File Meta Information group, PS3.10 7.1);
- SOP Class, SOP Instance, Study and Series Instance UIDs are present and valid (PS3.5 9.1), and the
  Media Storage SOP Instance UID of the meta group equals the SOP Instance UID (PS3.10 7.1);
- every top-level element's declared length is matched by the bytes present, the last element ends
  exactly at the end of the file (or the file ends with a Sequence Delimitation Item when the last
  element has undefined length, PS3.5 7.5.2), and native Pixel Data holds exactly
  Rows x Columns x SamplesPerPixel x NumberOfFrames x BitsAllocated / 8 bytes (PS3.5 8.1.1), while
  encapsulated Pixel Data is a well-formed item sequence (PS3.5 A.4).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from s4s_jupyter.core.errors import DICOMwebError, InvalidUID
from s4s_jupyter.core.uids import check_uid, is_valid_uid

UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
#: Explicit VR Little Endian and Big Endian: native Pixel Data, VRs in the file (PS3.5 A.2, A.3)
NATIVE_EXPLICIT = frozenset({"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})
#: pydicom does not read values longer than this when an object is checked (``defer_size``): native
#: Pixel Data's position and length are all the store needs (the file keeps the bytes as they came;
#: metadata names them by BulkDataURI). Other long values are then taken from the object's bytes. Reading
#: Pixel Data was half of ``dcmread``'s time on 512 KiB CT objects (0.3 of 0.6 ms: a copy into fresh memory).
DEFER_BYTES = 64 * 1024
SEQUENCE_DELIMITER_LE = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
SEQUENCE_DELIMITER_BE = b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"


class InvalidInstance(DICOMwebError):
    """An uploaded object that cannot be stored; ``reason`` is the Failure Reason (PS3.4 Annex GG 4.2).

    0xA900 "Data Set does not match SOP Class", 0xC000 "Cannot understand".
    """

    status = 400

    def __init__(self, message: str, *, reason: int = 0xC000) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CheckedInstance:
    """A Part 10 object that passed every check, with what the store indexes."""

    dataset: Dataset
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    #: absolute file offset of the Pixel Data value (None when absent or not addressable: deflated files)
    pixel_offset: int | None
    #: length of the Pixel Data value (None when there is no Pixel Data)
    pixel_length: int | None


def _raw_text(ds: Dataset, keyword: str) -> str | None:
    """A string value read from the element's bytes (pydicom's own conversion would warn on bad UIDs)."""
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return None
    item = ds.get_item(tag)
    if isinstance(item, RawDataElement):
        raw = item.value or b""
        return raw.decode("ascii", "replace").rstrip("\0 ").strip()
    value = item.value if item is not None else None
    return None if value is None else str(value).strip()


def _uid_of(ds: Dataset, keyword: str) -> str:
    value = _raw_text(ds, keyword)
    if not value:
        raise InvalidInstance(f"{keyword} is missing", reason=0xA900)
    try:
        return check_uid(value, keyword)
    except InvalidUID as exc:
        raise InvalidInstance(exc.message, reason=0xA900) from exc


def check_part10(data: bytes) -> CheckedInstance:
    """Parse and check ``data``; raise :class:`InvalidInstance` with a clear message on any failure."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InvalidInstance("not a DICOM Part 10 file (no 128-byte preamble followed by 'DICM')")
    # deferring is for native Pixel Data with explicit VRs; pydicom converts a deferred-mode read of
    # encapsulated Pixel Data into an element without its position, and a deflated file's positions
    # are in the inflated stream. The choice is made from the meta group's bytes and must agree with
    # the transfer syntax pydicom then used: a meta group naming two (a duplicated (0002,0010)) or one
    # the small reader misreads is read again in full, so the checks below see every byte
    syntax = _meta_transfer_syntax(data)
    try:
        ds = dcmread(io.BytesIO(data), defer_size=DEFER_BYTES if syntax in NATIVE_EXPLICIT else None)
        if syntax in NATIVE_EXPLICIT and _raw_text(ds.file_meta, "TransferSyntaxUID") != syntax:
            ds = dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        raise InvalidInstance(f"not a DICOM Part 10 file: {exc}") from exc
    except Exception as exc:  # pydicom raises many types for garbage
        raise InvalidInstance(f"unreadable DICOM file: {type(exc).__name__}: {exc}") from exc
    try:
        _take_deferred_values(ds, data)
        return _check_dataset(ds, data)
    except InvalidInstance:
        raise
    except Exception as exc:  # a value pydicom cannot convert, a malformed sequence, ...
        raise InvalidInstance(f"unreadable DICOM file: {type(exc).__name__}: {exc}") from exc


#: explicit VRs with a 4-byte length field (PS3.5 7.1.2)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                       b"UV"})


def _meta_transfer_syntax(data: bytes) -> str | None:
    """The Transfer Syntax UID of a Part 10 file's meta group (always Explicit VR Little Endian, PS3.10
    7.1), read from the bytes: pydicom has no call for this one value short of parsing the group into a
    Dataset. None when not found (pydicom then reads the file as it would anyway)."""
    pos = 132
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            return None
        if data[pos + 4:pos + 6] in _LONG_VRS:
            if pos + 12 > len(data):
                return None
            length, value_at = struct.unpack_from("<I", data, pos + 8)[0], pos + 12
        else:
            length, value_at = struct.unpack_from("<H", data, pos + 6)[0], pos + 8
        if element == 0x0010:
            return data[value_at:value_at + length].decode("ascii", "replace").rstrip("\0 ")
        pos = value_at + length
    return None


def _take_deferred_values(ds: Dataset, data: bytes) -> None:
    """Give every top-level value pydicom deferred its bytes from ``data``, except native Pixel Data
    with an explicit VR (left deferred: its length is checked against the bytes present, and JSON names
    it by BulkDataURI). Raises :class:`InvalidInstance` for a value that runs past the end."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or raw.value is not None:
            continue
        if raw.length in (0, UNDEFINED_LENGTH):
            continue
        end = raw.value_tell + raw.length
        if end > len(data):
            raise InvalidInstance(f"truncated file: element {tag} declares {raw.length} bytes but "
                                  f"{max(0, len(data) - raw.value_tell)} are present")
        if tag != PIXEL_DATA or raw.VR is None:
            ds[tag] = raw._replace(value=data[raw.value_tell:end])


def _check_dataset(ds: Dataset, data: bytes) -> CheckedInstance:
    meta = ds.file_meta
    ts_uid = _raw_text(meta, "TransferSyntaxUID")
    if not ts_uid:
        raise InvalidInstance("the File Meta Information has no Transfer Syntax UID (0002,0010)")
    if not is_valid_uid(ts_uid):
        raise InvalidInstance(f"TransferSyntaxUID {ts_uid!r} is not a valid DICOM UID (PS3.5 9.1)")
    sop_class = _uid_of(ds, "SOPClassUID")
    sop_uid = _uid_of(ds, "SOPInstanceUID")
    study = _uid_of(ds, "StudyInstanceUID")
    series = _uid_of(ds, "SeriesInstanceUID")
    media_uid = _raw_text(meta, "MediaStorageSOPInstanceUID")
    if media_uid is not None and media_uid != sop_uid:
        raise InvalidInstance("MediaStorageSOPInstanceUID (0002,0003) differs from SOPInstanceUID "
                              "(0008,0018)", reason=0xA900)
    media_class = _raw_text(meta, "MediaStorageSOPClassUID")
    if media_class is not None and media_class != sop_class:
        raise InvalidInstance("MediaStorageSOPClassUID (0002,0002) differs from SOPClassUID (0008,0016)",
                              reason=0xA900)
    if len({sop_uid, study, series}) != 3:
        raise InvalidInstance("SOP Instance, Study and Series Instance UIDs must differ", reason=0xA900)

    deflated = UID(ts_uid) == "1.2.840.10008.1.2.1.99"
    last_end: int | None = None
    last_undefined = False
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement):
            # pydicom parses undefined-length sequences as it reads; other parsed elements have no
            # recorded position, so the end of the file is then checked only for a sequence
            last_undefined = bool(getattr(raw, "is_undefined_length", False))
            last_end = None
            continue
        length = raw.length
        # a value left deferred (Pixel Data) was checked against the bytes present already
        value = raw.value if raw.value is not None else b""
        if raw.value is not None and length != UNDEFINED_LENGTH and len(value) != length:
            raise InvalidInstance(
                f"truncated file: element {tag} declares {length} bytes but {len(value)} are present")
        if length == UNDEFINED_LENGTH:
            last_undefined, last_end = True, None
        else:
            last_undefined, last_end = False, raw.value_tell + length
    if not deflated:
        if last_undefined:
            big = UID(ts_uid) == "1.2.840.10008.1.2.2"
            if not data.endswith(SEQUENCE_DELIMITER_BE if big else SEQUENCE_DELIMITER_LE):
                raise InvalidInstance("truncated file: the last element has undefined length and the file "
                                      "does not end with a Sequence Delimitation Item")
        elif last_end is not None and last_end != len(data):
            raise InvalidInstance(
                f"truncated or padded file: the last element ends at byte {last_end}, "
                f"the file has {len(data)}")

    pixel_offset = pixel_length = None
    raw_pixels = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if isinstance(raw_pixels, RawDataElement):
        # in a deflated file the value's position is one in the inflated stream, not in the file
        pixel_offset = None if deflated else raw_pixels.value_tell
        pixel_length = raw_pixels.length
        _check_pixel_data(ds, UID(ts_uid), raw_pixels)
    elif "Rows" in ds and "Columns" in ds and "PixelData" not in ds and _is_image_storage(sop_class):
        raise InvalidInstance("image has Rows and Columns but no Pixel Data (7FE0,0010)", reason=0xA900)
    return CheckedInstance(ds, sop_class, sop_uid, study, series, ts_uid, pixel_offset, pixel_length)


def _is_image_storage(sop_class: str) -> bool:
    # CT, MR, CR, DX, US, NM, PET, SC ... image storage SOP classes live under 1.2.840.10008.5.1.4.1.1.
    return sop_class.startswith("1.2.840.10008.5.1.4.1.1.")


def expected_native_length(ds: Dataset) -> int:
    """Bytes of native (uncompressed) Pixel Data implied by the Image Pixel Module (PS3.3 C.7.6.3):
    Rows x Columns x SamplesPerPixel x NumberOfFrames x BitsAllocated / 8, with YBR_FULL_422's
    horizontal chroma subsampling (PS3.3 C.7.6.3.1.2); pydicom's own rule."""
    from pydicom.pixels.utils import get_expected_length

    pixel_module = Dataset()  # a copy of what the rule needs: the checked dataset stays as read
    pixel_module.Rows = int(ds.Rows)
    pixel_module.Columns = int(ds.Columns)
    pixel_module.BitsAllocated = int(ds.BitsAllocated)
    # Type 1, but some writers omit it for grayscale images
    pixel_module.SamplesPerPixel = int(ds.get("SamplesPerPixel", 1) or 1)
    pixel_module.NumberOfFrames = int(ds.get("NumberOfFrames", 1) or 1)
    pixel_module.PhotometricInterpretation = str(ds.get("PhotometricInterpretation", "") or (
        "MONOCHROME2" if pixel_module.SamplesPerPixel == 1 else "RGB"))
    return int(get_expected_length(pixel_module, unit="bytes"))


def _check_pixel_data(ds: Dataset, ts: UID, raw: RawDataElement) -> None:
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if keyword not in ds:
            raise InvalidInstance(f"Pixel Data without {keyword}", reason=0xA900)
    if ts.is_encapsulated:
        if raw.length != UNDEFINED_LENGTH:
            raise InvalidInstance("encapsulated Pixel Data must have undefined length (PS3.5 A.4)")
        try:
            fragments = sum(1 for _ in generate_fragments(raw.value or b"", endianness="<"))
        except Exception as exc:
            raise InvalidInstance(f"malformed encapsulated Pixel Data: {exc}") from exc
        if fragments == 0:
            raise InvalidInstance("encapsulated Pixel Data holds no fragment")
        return
    expected = expected_native_length(ds)
    actual = raw.length if raw.value is None else len(raw.value)
    if actual not in (expected, expected + 1):
        raise InvalidInstance(
            f"Pixel Data holds {actual} bytes but Rows x Columns x SamplesPerPixel x NumberOfFrames x "
            f"BitsAllocated/8 = {expected}", reason=0xA900)
