"""A dataset read by pydicom as the DICOM JSON Model (PS3.18 F.2), converting element bytes directly.

``Dataset.to_json_dict`` first turns every raw element into a pydicom value object; at ingest that
conversion is most of the CPU a STOW-RS request costs. :func:`to_json` reads the bytes of the common
elements itself and gives the same answer as pydicom (a test compares both on every file pydicom ships
and on the generator's files), without pydicom's value warnings. What it does not handle exactly like
pydicom goes to pydicom, element by element: private implicit or UN elements, ambiguous VRs, the
structure of sequences (their items come back here), already-converted elements, character sets other
than the default, Latin-1 and UTF-8, empty values inside a multi-valued number, person names with
ideographic or phonetic groups.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

#: SpecificCharacterSet -> Python codec for the text VRs (SH, LO, UC, ST, LT, UT, PN); pydicom's default
#: (no SpecificCharacterSet) decodes as ISO 8859-1 too.
_CHARSETS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
_TEXT_MULTI = {"SH", "LO", "UC"}
_TEXT_SINGLE = {"ST", "LT", "UT"}
_SPLIT_RSTRIP = {"AS", "CS", "DA", "DT", "TM"}
_BINARY = {"OB", "OW", "OF", "OD", "OL", "OV"}
_STRUCT = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}

class _Fallback(Exception):
    """This element is converted by pydicom."""


def to_json(ds: Dataset, bulk_uri: Callable[[str], str], threshold: int, path: str = "",
            inherited: str | None = "latin_1") -> dict[str, Any]:
    """``ds`` as DICOM JSON; binary values longer than ``(threshold // 4) * 3`` bytes (pydicom's rule)
    become ``{"BulkDataURI": bulk_uri(path)}`` where ``path`` is ``TAG`` or ``SQTAG/item/TAG/...``.
    Sequence items without their own SpecificCharacterSet use ``inherited`` (their parent's)."""
    charset = _charset(ds, inherited)
    out: dict[str, Any] = {}
    tags = list(ds.keys())  # iterating the dataset itself would convert every element
    for tag in tags:
        key = f"{tag:08X}"
        elem_path = path + key
        raw = ds.get_item(tag, keep_deferred=True)
        try:
            if isinstance(raw, RawDataElement) and raw.value is None and _is_bulk(raw, threshold):
                out[key] = {"vr": _vr(raw), "BulkDataURI": bulk_uri(elem_path)}  # left unread by the check
                continue
            if charset is None or not isinstance(raw, RawDataElement):
                raise _Fallback
            out[key] = _raw_to_json(ds, raw, charset, bulk_uri, threshold, elem_path)
        except _Fallback:
            out[key] = _pydicom_json(ds, tag, bulk_uri, threshold, elem_path, charset)
    return out


def _is_bulk(raw: RawDataElement, threshold: int) -> bool:
    """A binary value of a known (explicit) VR whose length alone makes it a BulkDataURI."""
    return (raw.VR in _BINARY and raw.length != 0xFFFFFFFF  # 0xFFFFFFFF: undefined length
            and raw.length > (threshold // 4) * 3)


def _charset(ds: Dataset, inherited: str | None) -> str | None:
    """The codec of ``ds``'s text values, or None when pydicom must decode them."""
    raw = ds.get_item(0x00080005) if 0x00080005 in ds else None
    if raw is None:
        return inherited
    value = raw.value
    if isinstance(value, bytes):
        text = value.decode("latin_1").strip(" \0")
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None  # multi-valued: code extensions
    return _CHARSETS.get(text)


def _pydicom_json(ds: Dataset, tag: int, bulk_uri: Callable[[str], str], threshold: int,
                  path: str, charset: str | None) -> dict[str, Any]:
    elem = ds[tag]
    if elem.VR == "SQ":
        items = [to_json(item, bulk_uri, threshold, f"{path}/{i}/", charset)
                 for i, item in enumerate(elem.value)]
        return {"vr": "SQ", "Value": items}
    return elem.to_json_dict(lambda _e: bulk_uri(path), threshold)


def _raw_to_json(ds: Dataset, raw: RawDataElement, charset: str, bulk_uri: Callable[[str], str],
                 threshold: int, path: str) -> dict[str, Any]:
    vr = _vr(raw)
    value = raw.value
    if value is None or not raw.is_little_endian or " or " in vr or vr == "SQ":
        raise _Fallback
    if vr in _BINARY or vr == "UN":
        if not value:
            return {"vr": vr}
        if len(value) > (threshold // 4) * 3:
            return {"vr": vr, "BulkDataURI": bulk_uri(path)}
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
    if vr in _STRUCT:
        fmt = _STRUCT[vr]
        size = struct.calcsize(fmt)
        if len(value) % size:
            raise _Fallback
        numbers = list(struct.unpack(f"<{len(value) // size}{fmt}", value))
        return {"vr": vr, "Value": numbers} if numbers else {"vr": vr}
    if vr == "AT":
        if len(value) % 4:
            raise _Fallback
        pairs = struct.unpack(f"<{len(value) // 2}H", value)
        tags = [f"{(pairs[i] << 16) | pairs[i + 1]:08X}" for i in range(0, len(pairs), 2)]
        return {"vr": vr, "Value": tags} if tags else {"vr": vr}
    try:
        if vr in _TEXT_MULTI:
            values = [v.rstrip("\0 ") for v in value.decode(charset).split("\\")]
        elif vr in _TEXT_SINGLE:
            values = [value.decode(charset).rstrip("\0 ")]
        elif vr == "PN":
            text = value.rstrip(b"\0 ").decode(charset)
            if "=" in text:
                raise _Fallback
            values = text.split("\\")
            if values == [""]:
                return {"vr": vr}
            return {"vr": vr, "Value": [{"Alphabetic": v} for v in values]}
        elif vr == "AE":
            values = [v.strip() for v in value.decode("latin_1").split("\\")]
        elif vr == "UI":
            values = value.decode("latin_1").rstrip("\0 ").split("\\")
        elif vr == "UR":
            values = [value.decode("latin_1").rstrip()]
        elif vr in _SPLIT_RSTRIP:
            values = value.decode("latin_1").rstrip(" \0").split("\\")
        elif vr == "DS":
            values = value.decode("latin_1").strip().rstrip(" \0").split("\\")
            if values == [""]:
                return {"vr": vr}
            return {"vr": vr, "Value": [float(v) for v in _numbers(values)]}
        elif vr == "IS":
            values = value.decode("latin_1").rstrip(" \0").split("\\")
            if values == [""]:
                return {"vr": vr}
            return {"vr": vr, "Value": [_int(v) for v in _numbers(values)]}
        else:
            raise _Fallback
    except (UnicodeDecodeError, ValueError):
        raise _Fallback from None
    if values == [""]:
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _vr(raw: RawDataElement) -> str:
    """The VR pydicom gives ``raw`` (its ``raw_element_vr`` rule): the dictionary's for implicit VR and for
    a standard element written as UN; private and unknown implicit elements go to pydicom."""
    vr = raw.VR
    tag = raw.tag
    if vr is None:
        if tag.is_private or tag.element == 0:
            raise _Fallback
        try:
            return str(dictionary_VR(tag))
        except KeyError:
            raise _Fallback from None
    if vr == "UN":
        if tag.is_private:
            raise _Fallback
        if raw.value is None or len(raw.value) < 0xFFFF:
            try:
                return str(dictionary_VR(tag))
            except KeyError:
                return "UN"
    return str(vr)


def _numbers(values: list[str]) -> list[str]:
    if any(not v.strip() for v in values):
        raise _Fallback  # pydicom's handling of empty numbers in a list differs by version
    return values


def _int(v: str) -> int:
    f = float(v)
    if f != int(f):
        raise _Fallback  # pydicom refuses or warns about non-integer IS values
    return int(f)
