"""Reading and writing the DICOM JSON Model (PS3.18 F.2) without building pydicom Datasets.

QIDO-RS answers and WADO-RS metadata are lists of objects keyed by 8-hex-digit tags, each
``{"vr": ..., "Value": [...]}`` (or ``"BulkDataURI"``/``"InlineBinary"``). These helpers read values by
keyword or tag, so mapping code (ImagingStudy <-> DICOM) stays readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

DicomJSON = dict[str, Any]


def tag_of(key: str | int) -> str:
    """The DICOM JSON key (``"0020000D"``) of a keyword (``"StudyInstanceUID"``), tag string or int."""
    if isinstance(key, int):
        return f"{key:08X}"
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        return key.upper()
    tag = tag_for_keyword(key)
    if tag is None:
        raise KeyError(f"unknown DICOM keyword {key!r}")
    return f"{tag:08X}"


def values(obj: Mapping[str, Any], key: str | int) -> list[Any]:
    """All values of an attribute (``[]`` when absent or empty). Person names give their Alphabetic form."""
    element = obj.get(tag_of(key))
    if not element:
        return []
    vals = element.get("Value") or []
    if element.get("vr") == "PN":
        return [v.get("Alphabetic", "") if isinstance(v, Mapping) else v for v in vals]
    return list(vals)


def first(obj: Mapping[str, Any], key: str | int, default: Any = None) -> Any:
    """The first value of an attribute, or ``default``."""
    vals = values(obj, key)
    return vals[0] if vals else default


def element(key: str | int, *vals: Any, vr: str | None = None) -> tuple[str, dict[str, Any]]:
    """One ``(tag, element)`` pair; the VR is taken from the data dictionary unless given."""
    tag = tag_of(key)
    the_vr = vr or dictionary_VR(int(tag, 16))
    if the_vr == "PN":
        vals = tuple({"Alphabetic": v} if isinstance(v, str) else v for v in vals)
    out: dict[str, Any] = {"vr": the_vr}
    if vals:
        out["Value"] = list(vals)
    return tag, out


def build(**attributes: Any) -> DicomJSON:
    """A DICOM JSON object from keywords, e.g. ``build(StudyInstanceUID="1.2", Modality="CT")``."""
    obj: DicomJSON = {}
    for keyword, value in attributes.items():
        vals = value if isinstance(value, list | tuple) else ([] if value is None else [value])
        tag, el = element(keyword, *vals)
        obj[tag] = el
    return dict(sorted(obj.items()))
