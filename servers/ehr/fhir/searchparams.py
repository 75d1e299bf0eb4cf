"""The FHIR R4 search parameters this server supports, per resource type (R4 3.1.1, and each resource's
"Search Parameters" table), and how each is read out of a resource to be indexed.

Only parameter names that R4 defines for the type are supported, with R4's meaning: ``date`` exists on
Observation, Procedure, Immunization, AllergyIntolerance, DocumentReference and DiagnosticReport; Condition
has ``onset-date``/``recorded-date``, MedicationRequest ``authoredon``, MedicationStatement ``effective``.
Every type also has ``_id`` and ``_lastUpdated`` (R4 3.1.1.4.1, 3.1.1.4.4).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ParamType(StrEnum):
    """R4 search parameter types used here (R4 3.1.1.5)."""

    TOKEN = "token"
    DATE = "date"
    REFERENCE = "reference"
    ID = "id"  # _id: a token matched against the logical id (R4 3.1.1.4.1)


@dataclass(frozen=True)
class SearchParam:
    """One search parameter of one resource type.

    ``paths`` are dotted element paths into the resource's JSON (lists are walked through); for a
    ``code``-typed element ``implicit_system`` is the code system the token is indexed under.
    """

    name: str
    type: ParamType
    paths: tuple[str, ...]
    documentation: str
    implicit_system: str = ""

    def values(self, resource: dict[str, Any]) -> Iterator[Any]:
        for path in self.paths:
            yield from _walk(resource, path.split("."))


def _walk(node: Any, parts: list[str]) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, parts)
        return
    if not parts:
        if node is not None:
            yield node
        return
    if isinstance(node, dict) and parts[0] in node:
        yield from _walk(node[parts[0]], parts[1:])


def _token(name: str, *paths: str, doc: str, system: str = "") -> SearchParam:
    return SearchParam(name, ParamType.TOKEN, paths, doc, system)


def _date(name: str, *paths: str, doc: str) -> SearchParam:
    return SearchParam(name, ParamType.DATE, paths, doc)


def _ref(name: str, *paths: str, doc: str) -> SearchParam:
    return SearchParam(name, ParamType.REFERENCE, paths, doc)


COMMON: tuple[SearchParam, ...] = (
    SearchParam("_id", ParamType.ID, ("id",), "Logical id of the resource"),
    _date("_lastUpdated", "meta.lastUpdated", doc="When the resource version last changed"),
)

_PATIENT_REF = _ref("patient", "subject", doc="The patient the resource is about")
_SUBJECT_REF = _ref("subject", "subject", doc="The subject of the resource (a Patient here)")
_OWN_PATIENT = _ref("patient", "patient", doc="The patient the resource is about")

#: resource type -> its search parameters, beyond :data:`COMMON`
BY_TYPE: dict[str, tuple[SearchParam, ...]] = {
    "Patient": (
        _token("identifier", "identifier", doc="A patient identifier, e.g. the MRN"),
        _date("birthdate", "birthDate", doc="The patient's date of birth"),
        _token("gender", "gender", doc="Administrative gender", system="http://hl7.org/fhir/administrative-gender"),
    ),
    "AllergyIntolerance": (
        _OWN_PATIENT,
        _token("category", "category", doc="food | medication | environment | biologic",
               system="http://hl7.org/fhir/allergy-intolerance-category"),
        _token("code", "code", "reaction.substance", doc="Code of the substance or its class"),
        _token("clinical-status", "clinicalStatus", doc="active | inactive | resolved"),
        _date("date", "recordedDate", doc="Date first recorded"),
    ),
    "Condition": (
        _PATIENT_REF, _SUBJECT_REF,
        _token("category", "category", doc="problem-list-item | encounter-diagnosis"),
        _token("code", "code", doc="Code of the condition (SNOMED CT, ICD-10-CM)"),
        _token("clinical-status", "clinicalStatus", doc="active | recurrence | ... | resolved"),
        _date("onset-date", "onsetDateTime", "onsetPeriod", doc="Date of onset"),
        _date("recorded-date", "recordedDate", doc="Date the condition was first recorded"),
    ),
    "MedicationRequest": (
        _PATIENT_REF, _SUBJECT_REF,
        _token("category", "category", doc="Type of medication usage"),
        _token("code", "medicationCodeableConcept", doc="Medication code (RxNorm)"),
        _token("status", "status", doc="active | completed | ...",
               system="http://hl7.org/fhir/CodeSystem/medicationrequest-status"),
        _token("intent", "intent", doc="proposal | plan | order | ...",
               system="http://hl7.org/fhir/CodeSystem/medicationrequest-intent"),
        _date("authoredon", "authoredOn", doc="When the prescription was written"),
    ),
    "MedicationStatement": (
        _PATIENT_REF, _SUBJECT_REF,
        _token("category", "category", doc="Type of medication usage"),
        _token("code", "medicationCodeableConcept", doc="Medication code (RxNorm)"),
        _token("status", "status", doc="active | completed | ...",
               system="http://hl7.org/fhir/CodeSystem/medication-statement-status"),
        _date("effective", "effectiveDateTime", "effectivePeriod", doc="When the medication is/was taken"),
    ),
    "Observation": (
        _PATIENT_REF, _SUBJECT_REF,
        _token("category", "category", doc="laboratory | vital-signs | social-history | ..."),
        _token("code", "code", doc="The observation's code (LOINC)"),
        _token("status", "status", doc="registered | preliminary | final | amended",
               system="http://hl7.org/fhir/observation-status"),
        _date("date", "effectiveDateTime", "effectivePeriod", "effectiveInstant",
              doc="Clinically relevant time of the observation"),
    ),
    "Procedure": (
        _PATIENT_REF, _SUBJECT_REF,
        _token("category", "category", doc="Classification of the procedure"),
        _token("code", "code", doc="Code of the procedure (SNOMED CT)"),
        _token("status", "status", doc="preparation | in-progress | completed | ...",
               system="http://hl7.org/fhir/event-status"),
        _date("date", "performedDateTime", "performedPeriod", doc="When the procedure was performed"),
    ),
    "Immunization": (
        _OWN_PATIENT,
        _token("vaccine-code", "vaccineCode", doc="Vaccine product administered (CVX)"),
        _token("status", "status", doc="completed | entered-in-error | not-done",
               system="http://hl7.org/fhir/event-status"),
        _date("date", "occurrenceDateTime", doc="Vaccination administration date"),
    ),
    "DocumentReference": (
        _PATIENT_REF, _SUBJECT_REF,
        _token("category", "category", doc="Categorization of the document"),
        _token("type", "type", doc="Kind of document (LOINC)"),
        _token("status", "status", doc="current | superseded | entered-in-error",
               system="http://hl7.org/fhir/document-reference-status"),
        _date("date", "date", doc="When the document reference was created"),
        _date("period", "context.period", doc="Time of service that is being documented"),
    ),
    "RelatedPerson": (
        _OWN_PATIENT,
        _token("relationship", "relationship", doc="The relationship to the patient"),
        _token("active", "active", doc="Whether the record is in active use"),
    ),
    "DiagnosticReport": (
        _PATIENT_REF, _SUBJECT_REF,
        _token("category", "category", doc="Service category, e.g. LOINC LP29684-5 radiology"),
        _token("code", "code", doc="The code of the report (LOINC)"),
        _token("identifier", "identifier", doc="A report identifier, e.g. the accession number"),
        _token("status", "status", doc="registered | partial | preliminary | final",
               system="http://hl7.org/fhir/diagnostic-report-status"),
        _date("date", "effectiveDateTime", "effectivePeriod",
              doc="The clinically relevant time of the report"),
        _date("issued", "issued", doc="When the report was issued"),
    ),
}

#: The resource types this server answers: the Sync for Science ones, and RelatedPerson (a caregiver's
#: ``fhirUser``, SMART App Launch 2.x).
RESOURCE_TYPES: tuple[str, ...] = tuple(BY_TYPE)

#: element holding the patient compartment reference, per type (R4 Patient compartment definition)
COMPARTMENT_PATH: dict[str, str] = {
    t: next(p.paths[0] for p in params if p.name == "patient")
    for t, params in BY_TYPE.items() if t != "Patient"
}


def params_for(resource_type: str) -> dict[str, SearchParam]:
    """Every search parameter of ``resource_type`` by name (raises KeyError for an unknown type)."""
    return {p.name: p for p in (*COMMON, *BY_TYPE[resource_type])}


def patient_of(resource: dict[str, Any]) -> str | None:
    """The logical id of the Patient whose compartment ``resource`` is in (None if it is in none)."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    path = COMPARTMENT_PATH.get(str(rtype))
    ref = resource.get(path) if path else None
    target = ref.get("reference") if isinstance(ref, dict) else None
    if isinstance(target, str) and target.startswith("Patient/"):
        return target[len("Patient/"):]
    return None
