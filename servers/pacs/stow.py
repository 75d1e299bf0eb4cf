"""STOW-RS: storing the parts of a ``multipart/related; type="application/dicom"`` body (PS3.18 10.5).

:class:`StoreTransaction` collects the outcome of each part and builds the Store Instances Response
(PS3.18 10.5.3.1, a DICOM JSON object): ReferencedSOPSequence (0008,1199) for stored instances,
FailedSOPSequence (0008,1198) with a FailureReason (0008,1197) for the others. Status (PS3.18 Table
10.5.3-1): 200 when every instance was stored, 202 when some were, otherwise 409 when a failure is a
conflict with stored data and 400 when every part was unacceptable; 415 when no part was
``application/dicom``; 413 when every part was larger than the per-part limit.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from s4s_jupyter.core.errors import DICOMwebError
from servers.pacs.store import BASE, Conflict, Stored
from servers.pacs.validation import InvalidInstance

#: Failure Reasons (PS3.4 Annex GG.4.2 / B.2.3)
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC000
DATASET_DOES_NOT_MATCH = 0xA900


class UnsupportedMediaType(DICOMwebError):
    status = 415


class PayloadTooLarge(DICOMwebError):
    status = 413


@dataclass
class Failure:
    sop_class_uid: str
    sop_instance_uid: str
    reason: int
    message: str
    conflict: bool


@dataclass
class StoreTransaction:
    """The outcome of one STOW-RS request, part by part."""

    study_uid: str | None = None
    stored: list[Stored] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    unsupported_parts: int = 0
    oversized_parts: int = 0

    def add_stored(self, s: Stored) -> None:
        self.stored.append(s)

    def add_failure(self, data: bytes, exc: Exception) -> None:
        sop_class, sop_uid = best_effort_uids(data)
        if isinstance(exc, Conflict):
            self.failed.append(Failure(sop_class, sop_uid, exc.reason, exc.message, True))
        elif isinstance(exc, InvalidInstance):
            self.failed.append(Failure(sop_class, sop_uid, exc.reason, exc.message, False))
        else:
            self.failed.append(Failure(sop_class, sop_uid, PROCESSING_FAILURE, "processing failure", False))

    def add_oversized(self, size: int, limit: int) -> None:
        self.oversized_parts += 1
        self.failed.append(Failure("", "", OUT_OF_RESOURCES,
                                   f"a part of {size} bytes exceeds the limit of {limit} bytes per part",
                                   False))

    def add_unsupported(self, content_type: str) -> None:
        self.unsupported_parts += 1
        self.failed.append(Failure("", "", SOP_CLASS_NOT_SUPPORTED,
                                   f"part of type {content_type!r} is not application/dicom", False))

    def status(self) -> int:
        if not self.failed:
            return 200
        if self.stored:
            return 202
        if self.unsupported_parts == len(self.failed):
            return 415
        if self.oversized_parts == len(self.failed):
            return 413
        if any(f.conflict for f in self.failed):
            return 409
        return 400

    def response(self) -> dict[str, Any]:
        """The Store Instances Response (PS3.18 10.5.3.1) with :data:`BASE` placeholders in URLs."""
        out: dict[str, Any] = {}
        studies = {s.study_uid for s in self.stored}
        study = self.study_uid or (next(iter(studies)) if len(studies) == 1 else None)
        if study is not None:
            out["00081190"] = {"vr": "UR", "Value": [f"{BASE}/studies/{study}"]}
        if self.failed:
            out["00081198"] = {"vr": "SQ", "Value": [_failed_item(f) for f in self.failed]}
        if self.stored:
            out["00081199"] = {"vr": "SQ", "Value": [{
                "00081150": {"vr": "UI", "Value": [s.sop_class_uid]},
                "00081155": {"vr": "UI", "Value": [s.sop_instance_uid]},
                "00081190": {"vr": "UR", "Value": [
                    f"{BASE}/studies/{s.study_uid}/series/{s.series_uid}/instances/{s.sop_instance_uid}"]},
            } for s in self.stored]}
        return out

    def message(self) -> str:
        if not self.failed:
            return f"stored {len(self.stored)} instance(s)"
        reasons = "; ".join(f.message for f in self.failed[:5])
        return f"stored {len(self.stored)}, failed {len(self.failed)}: {reasons}"


def _failed_item(f: Failure) -> dict[str, Any]:
    return {
        "00081150": {"vr": "UI", "Value": [f.sop_class_uid]} if f.sop_class_uid else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [f.sop_instance_uid]} if f.sop_instance_uid else {"vr": "UI"},
        "00081197": {"vr": "US", "Value": [f.reason]},
    }


def best_effort_uids(data: bytes) -> tuple[str, str]:
    """SOP Class and Instance UIDs of a rejected object, when they can be read at all (for the response)."""
    from pydicom import dcmread

    from s4s_jupyter.core.uids import is_valid_uid

    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True, force=True,
                     specific_tags=["SOPClassUID", "SOPInstanceUID"])
        cls, uid = str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
    except Exception:
        return "", ""
    return (cls if is_valid_uid(cls) else "", uid if is_valid_uid(uid) else "")
