"""FHIR patient -> DICOM PatientID: which ``Patient.identifier`` the PACS knows the patient by.

The EHR's Patient resource carries the medical record number the PACS stores as PatientID (0010,0020)
as an identifier of type ``http://terminology.hl7.org/CodeSystem/v2-0203|MR`` (FHIR R4 Identifier.type,
v2 table 0203); which identifier to use is configurable (another type, or an identifier system). The
broker reads the Patient with its own client_credentials token and caches the answer.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from servers.broker.cache import TTLCache
from servers.broker.ehr_client import EHRClient

#: FHIR R4 id (2.24.0.x "id": [A-Za-z0-9\-\.]{1,64})
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class PatientDirectory(Protocol):
    async def dicom_patient_id(self, patient: str) -> str | None:
        """The PACS's PatientID of FHIR patient ``patient``, or None when the EHR knows none."""
        ...


class IdentifierRule:
    """Selects one identifier of a Patient: ``type:SYSTEM|CODE`` or ``system:URI``."""

    def __init__(self, spec: str) -> None:
        kind, _, value = spec.partition(":")
        if kind == "type" and "|" in value:
            self.type_system, _, self.type_code = value.partition("|")
            self.system: str | None = None
        elif kind == "system" and value:
            self.system, self.type_system, self.type_code = value, "", ""
        else:
            raise ValueError(f"patient identifier rule must be 'type:SYSTEM|CODE' or 'system:URI', "
                             f"not {spec!r}")
        self.spec = spec

    def pick(self, patient: Mapping[str, Any]) -> str | None:
        for ident in patient.get("identifier") or []:
            if not isinstance(ident, Mapping) or not isinstance(ident.get("value"), str):
                continue
            if self.system is not None:
                if ident.get("system") == self.system:
                    return str(ident["value"])
                continue
            codings = (ident.get("type") or {}).get("coding") or []
            if any(isinstance(c, Mapping) and c.get("system") == self.type_system
                   and c.get("code") == self.type_code for c in codings):
                return str(ident["value"])
        return None


class FHIRPatientDirectory:
    """Reads ``Patient/{id}`` from the EHR with the broker's token; caches id -> PatientID."""

    def __init__(self, ehr: EHRClient, rule: IdentifierRule, *, ttl: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ehr = ehr
        self.rule = rule
        self.cache: TTLCache[str, str] = TTLCache(ttl, clock=clock)

    async def dicom_patient_id(self, patient: str) -> str | None:
        if not FHIR_ID.match(patient):
            return None
        cached = self.cache.get(patient)
        if cached is not None:
            return cached
        resource = await self.ehr.read("Patient", patient)
        if resource is None or resource.get("id") not in (None, patient):
            return None
        value = self.rule.pick(resource)
        if value:
            self.cache.put(patient, value)
        return value


PatientReader = Callable[[str], "Mapping[str, Any] | Awaitable[Mapping[str, Any] | None] | None"]


class InProcessPatientDirectory:
    """For an application that holds the Patient resources itself (the EHR mounting the broker):
    ``read(id)`` returns the Patient resource (or None), sync or async."""

    def __init__(self, read: PatientReader, rule: IdentifierRule) -> None:
        self.read = read
        self.rule = rule

    async def dicom_patient_id(self, patient: str) -> str | None:
        if not FHIR_ID.match(patient):
            return None
        resource = self.read(patient)
        if inspect.isawaitable(resource):
            resource = await resource
        if not isinstance(resource, Mapping) or resource.get("id") not in (None, patient):
            return None
        return self.rule.pick(resource)
