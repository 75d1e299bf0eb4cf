"""Comparing two DICOMweb origin servers' answers (PS3.18), and building raw STOW-RS requests.

QIDO-RS answers are compared as sets keyed by the level's unique key (PS3.18 10.6.3.3: the order of
matches is not specified); attribute values through the DICOM JSON model (PS3.18 F.2), with the few
normalisations the standard allows: Retrieve URL relative to each server's base, Person Name by its
Alphabetic group, numbers as numbers, and Specific Character Set ignored (a DICOM JSON payload is
UTF-8 whatever character set the stored object declares, PS3.18 F.2).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

import httpx
from pydicom.datadict import tag_for_keyword

DicomJSON = dict[str, Any]

SOP_INSTANCE_UID = "00080018"
SERIES_INSTANCE_UID = "0020000E"
STUDY_INSTANCE_UID = "0020000D"
RETRIEVE_URL = "00081190"
SPECIFIC_CHARACTER_SET = "00080005"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
REFERENCED_SOP_INSTANCE_UID = "00081155"


class QueryLevel(Enum):
    """QIDO-RS resource levels (PS3.18 10.6.1), with their unique key and required return keys."""

    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"

    @property
    def unique_key(self) -> str:
        return {QueryLevel.STUDY: STUDY_INSTANCE_UID, QueryLevel.SERIES: SERIES_INSTANCE_UID,
                QueryLevel.INSTANCE: SOP_INSTANCE_UID}[self]

    @property
    def required(self) -> dict[str, str]:
        """Return keys of type R/U in PS3.18 Tables 10.6.3-3/-4/-5, plus conditional keys our files give.

        The conditional ones (Rows, Columns, Bits Allocated, Series Description, Retrieve URL) are
        "shall be present if known"; every test file carries them, so they are known.
        """
        if self is QueryLevel.STUDY:
            return {"00080020": "StudyDate", "00080030": "StudyTime", "00080050": "AccessionNumber",
                    "00080061": "ModalitiesInStudy", "00080090": "ReferringPhysicianName",
                    RETRIEVE_URL: "RetrieveURL", "00100010": "PatientName", "00100020": "PatientID",
                    "00100030": "PatientBirthDate", "00100040": "PatientSex",
                    STUDY_INSTANCE_UID: "StudyInstanceUID", "00200010": "StudyID",
                    "00201206": "NumberOfStudyRelatedSeries", "00201208": "NumberOfStudyRelatedInstances"}
        if self is QueryLevel.SERIES:
            return {"00080060": "Modality", "0008103E": "SeriesDescription", RETRIEVE_URL: "RetrieveURL",
                    SERIES_INSTANCE_UID: "SeriesInstanceUID", "00200011": "SeriesNumber",
                    "00201209": "NumberOfSeriesRelatedInstances"}
        return {"00080016": "SOPClassUID", SOP_INSTANCE_UID: "SOPInstanceUID", RETRIEVE_URL: "RetrieveURL",
                "00200013": "InstanceNumber", "00280010": "Rows", "00280011": "Columns",
                "00280100": "BitsAllocated"}


def tag_of(name: str) -> str:
    """The DICOM JSON key (``"0020000D"``) of a keyword or an 8-hex-digit tag."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return name.upper()
    tag = tag_for_keyword(name)
    if tag is None:
        raise KeyError(name)
    return f"{tag:08X}"


def first(obj: Mapping[str, Any], tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON object, or None."""
    vals = (obj.get(tag) or {}).get("Value") or []
    return vals[0] if vals else None


def key_of(obj: Mapping[str, Any], level: QueryLevel) -> str:
    value = first(obj, level.unique_key)
    if not isinstance(value, str):
        raise AssertionError(f"a {level.value} result without its unique key: {json.dumps(obj)[:300]}")
    return value


def by_key(results: Iterable[DicomJSON], level: QueryLevel) -> dict[str, DicomJSON]:
    out: dict[str, DicomJSON] = {}
    for obj in results:
        uid = key_of(obj, level)
        if uid in out:
            raise AssertionError(f"{level.value} {uid} returned twice")
        out[uid] = obj
    return out


def _number(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return Decimal(str(v))
    if isinstance(v, str):
        try:
            return Decimal(v.strip())
        except ArithmeticError:
            return v
    return v


def normalized(element: Mapping[str, Any], base_url: str) -> Any:
    """A comparable form of one DICOM JSON element's value (PS3.18 F.2.2)."""
    vr = element.get("vr")
    values = element.get("Value") or []
    if "BulkDataURI" in element or "InlineBinary" in element:
        return ("binary",)
    if vr == "PN":
        return [v.get("Alphabetic", "") if isinstance(v, Mapping) else v for v in values]
    if vr in ("IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        return [_number(v) for v in values]
    if vr == "UR":
        return [v[len(base_url):] if isinstance(v, str) and v.startswith(base_url) else v for v in values]
    if vr == "SQ":
        return [{t: normalized(e, base_url) for t, e in item.items() if t != SPECIFIC_CHARACTER_SET}
                for item in values]
    if isinstance(values, list):
        return [v.rstrip() if isinstance(v, str) else v for v in values]
    return values


@dataclass
class Differences:
    """What differs between a reference answer and ours, in words a failing test can print."""

    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.items.append(text)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __str__(self) -> str:
        return "\n".join(self.items)


def compare_objects(ref: Mapping[str, Any], ours: Mapping[str, Any], *, ref_base: str, our_base: str,
                    required: Mapping[str, str] | None = None, where: str = "",
                    ignore: Sequence[str] = (SPECIFIC_CHARACTER_SET,)) -> Differences:
    """Differences between two DICOM JSON objects.

    Every ``required`` tag must be in ours (whatever the reference does: the standard is the judge);
    every tag present in both must have equal normalised values.
    """
    diffs = Differences()
    for tag, name in (required or {}).items():
        if tag not in ours or not (ours[tag].get("Value") or ours[tag].get("BulkDataURI")):
            diffs.add(f"{where}: required {name} ({tag}) missing from our answer")
    for tag in sorted(set(ref) & set(ours)):
        if tag in ignore:
            continue
        a, b = normalized(ref[tag], ref_base), normalized(ours[tag], our_base)
        if a != b:
            diffs.add(f"{where}: {tag} differs: reference {a!r} ours {b!r}")
        elif ref[tag].get("vr") != ours[tag].get("vr"):
            diffs.add(f"{where}: {tag} VR differs: reference {ref[tag].get('vr')} "
                      f"ours {ours[tag].get('vr')}")
    return diffs


# -- raw HTTP ------------------------------------------------------------------------------------


def multipart_related(parts: Sequence[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    """A ``multipart/related`` body (RFC 2387) of ``parts`` and its Content-Type (PS3.18 8.6.1.2)."""
    boundary = f"s4s-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode())
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="{part_type}"; boundary={boundary}'


def stow(base_url: str, parts: Sequence[bytes], *, study_uid: str | None = None,
         content_type: str | None = None, part_type: str = "application/dicom") -> httpx.Response:
    """POST ``parts`` to ``{base}/studies[/{study}]`` (STOW-RS, PS3.18 10.5) and return the response."""
    body, ctype = multipart_related(parts, part_type)
    url = f"{base_url}/studies" + (f"/{study_uid}" if study_uid else "")
    return httpx.post(url, content=body, timeout=60.0,
                      headers={"Content-Type": content_type or ctype, "Accept": "application/dicom+json"})


def json_body(response: httpx.Response) -> Any:
    """The response's JSON body; raises AssertionError naming the status and content type if it has none."""
    ctype = response.headers.get("content-type", "")
    assert "json" in ctype, (f"{response.status_code} answer is not JSON (Content-Type {ctype!r}): "
                             f"{response.text[:200]!r}")
    try:
        return response.json()
    except ValueError as exc:
        raise AssertionError(f"{response.status_code} answer is not valid JSON: {response.text[:200]!r}") \
            from exc


def referenced_uids(store_response: Mapping[str, Any], sequence: str) -> set[str]:
    """SOP Instance UIDs listed in the Store Instances Response's ``sequence`` (PS3.18 10.5.3.2)."""
    element = store_response.get(sequence) or {}
    return {str(first(item, REFERENCED_SOP_INSTANCE_UID)) for item in element.get("Value") or []}
