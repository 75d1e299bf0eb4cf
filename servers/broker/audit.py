"""The broker's audit trail: one FHIR R4 ``AuditEvent`` per search and retrieve, as a JSON line.

Each line is a complete AuditEvent resource (FHIR R4 "AuditEvent"; DICOM PS3.15 A.5 event codes for
DICOMweb): *who* (``agent``: the OAuth client_id that presented the token, requestor), *for which
patient* and *what* (``entity``: the Patient reference, the study's ``urn:dicom:uid`` identifier and the
request path without its query string), *outcome* (``0`` success, ``4`` a refused request, ``8`` a
failure, with the HTTP status in ``outcomeDesc``). Lines go to ``{data_dir}/audit.jsonl`` (append-only)
and to the ``s4s.audit`` logger. Tokens never appear: they are not part of any field.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("s4s.audit")

DCM = "http://dicom.nema.org/resources/ontology/DCM"
#: (type coding, subtype coding, action) per kind of request
KINDS: dict[str, tuple[dict[str, str], dict[str, str], str]] = {
    "search": ({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                "display": "RESTful Operation"},
               {"system": "http://hl7.org/fhir/restful-interaction", "code": "search-type",
                "display": "search type"}, "E"),
    "read": ({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
              "display": "RESTful Operation"},
             {"system": "http://hl7.org/fhir/restful-interaction", "code": "read", "display": "read"}, "R"),
    "query": ({"system": DCM, "code": "110112", "display": "Query"},
              {"system": "http://hl7.org/fhir/restful-interaction", "code": "search-type",
               "display": "search type"}, "E"),
    "retrieve": ({"system": DCM, "code": "110103", "display": "DICOM Instances Accessed"},
                 {"system": "http://hl7.org/fhir/restful-interaction", "code": "read", "display": "read"},
                 "R"),
}


@dataclass
class AuditRecord:
    """What a handler learned about one request, filled in as it goes."""

    kind: str
    path: str
    client_id: str | None = None
    patient: str | None = None
    study_uid: str | None = None
    address: str | None = None


def outcome_code(status: int) -> str:
    return "0" if status < 400 else "4" if status < 500 else "8"


class AuditTrail:
    def __init__(self, path: Path | None, observer: str) -> None:
        self.path = path
        self.observer = observer
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def event(self, record: AuditRecord, status: int, detail: str = "") -> dict[str, Any]:
        """The AuditEvent for ``record`` finished with HTTP ``status``."""
        type_coding, subtype, action = KINDS[record.kind]
        agent: dict[str, Any] = {
            "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110153",
                                 "display": "Source Role ID"}]},
            "who": {"identifier": {"system": "urn:ietf:rfc:6749:client_id",
                                   "value": record.client_id or "(unauthenticated)"}},
            "requestor": True,
        }
        if record.address:
            agent["network"] = {"address": record.address, "type": "2"}
        entities: list[dict[str, Any]] = []
        if record.patient:
            entities.append({"what": {"reference": f"Patient/{record.patient}"},
                             "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                                      "code": "1", "display": "Person"},
                             "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role",
                                      "code": "1", "display": "Patient"}})
        what: dict[str, Any] = {"display": record.path}
        if record.study_uid:
            what["identifier"] = {"system": "urn:dicom:uid", "value": f"urn:oid:{record.study_uid}"}
        entities.append({"what": what,
                         "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                                  "code": "2", "display": "System Object"}})
        return {
            "resourceType": "AuditEvent",
            "type": type_coding,
            "subtype": [subtype],
            "action": action,
            "recorded": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "outcome": outcome_code(status),
            "outcomeDesc": f"{status} {detail}".strip(),
            "agent": [agent],
            "source": {"observer": {"display": self.observer},
                       "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                                 "code": "4", "display": "Application Server"}]},
            "entity": entities,
        }

    def record(self, record: AuditRecord, status: int, detail: str = "") -> dict[str, Any]:
        event = self.event(record, status, detail)
        line = json.dumps(event, separators=(",", ":"))
        log.info("%s %s client=%s patient=%s study=%s outcome=%s %s", record.kind, record.path,
                 record.client_id, record.patient, record.study_uid, event["outcome"], event["outcomeDesc"])
        if self.path is not None:
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, (line + "\n").encode())
                finally:
                    os.close(fd)
        return event
