"""FHIR R4 resources as table rows with readable, predictable columns.

Every resource type has a fixed list of columns (an empty search still has them), in this order:
``id``, ``patient`` (the id of the subject/patient reference), the type's own columns, ``last_updated``.
The conventions, the same for every type:

- a CodeableConcept becomes ``{name}`` (the first coding's code), ``{name}_system`` and
  ``{name}_display`` (the coding's display, else the concept's text) (R4 2.24.0.14, 2.24.0.13);
- a Quantity becomes ``value`` (float) and ``unit`` (``unit``, else ``code``) (R4 2.24.0.18);
- dates, dateTimes and instants become pandas datetimes in UTC (a date means its midnight UTC); a Period
  its ``start``;
- a Reference becomes the referenced id (``Patient/123`` -> ``123``) (R4 2.3.0); a logical reference
  (``identifier`` only, R4 2.3.0.1) becomes the identifier's value, and for a ``urn:dicom:uid`` identifier
  the bare DICOM UID (``urn:oid:`` removed), so a DiagnosticReport's ``imaging_studies`` join the
  ``study_uid`` column of :meth:`~s4s_jupyter.Session.imaging_studies`.

Observations with components and no value of their own (blood pressure) give one row per component,
with the panel's code in ``panel``; the raw resources stay available through the search calls'
``raw=True`` (:meth:`s4s_jupyter.client.fhir.FHIRClient.resources`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

Resource = Mapping[str, Any]
Row = dict[str, Any]


def ref_id(reference: Any) -> str | None:
    """``{"reference": "Patient/123"}`` -> ``"123"`` (also absolute and versioned references).

    A reference by ``identifier`` alone (R4 2.3.0.1, logical reference) gives the identifier's value;
    ``{"identifier": {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}}`` gives the UID ``"1.2.3"``
    (:func:`s4s_jupyter.core.imaging_study.study_uid_of`, the mapping the servers use).
    """
    if not isinstance(reference, Mapping):
        return None
    text = reference.get("reference")
    if not isinstance(text, str) or not text:
        return identifier_value(reference.get("identifier"))
    parts = text.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return parts[-1]


def identifier_value(identifier: Any) -> str | None:
    """The value of an Identifier; the DICOM UID for a ``urn:dicom:uid`` one (``urn:oid:`` removed)."""
    if not isinstance(identifier, Mapping):
        return None
    if identifier.get("system") == "urn:dicom:uid":
        from s4s_jupyter.core.imaging_study import study_uid_of  # imports pydicom: only when needed

        try:
            return study_uid_of({"identifier": [identifier]})
        except ValueError:
            pass  # not a valid UID: the value as it is
    value = identifier.get("value")
    return value if isinstance(value, str) and value else None


def concept(cc: Any, prefix: str) -> Row:
    """The three columns of a CodeableConcept (or a Coding)."""
    code = system = display = None
    if isinstance(cc, Mapping):
        codings = cc.get("coding") if "coding" in cc else [cc]
        first = next((c for c in codings or [] if isinstance(c, Mapping)), {})
        code, system = first.get("code"), first.get("system")
        display = first.get("display") or cc.get("text")
    return {prefix: code, f"{prefix}_system": system, f"{prefix}_display": display}


def _first(items: Any) -> Any:
    return items[0] if isinstance(items, list) and items else None


def _when(resource: Resource, *names: str) -> Any:
    """The first of ``{name}DateTime``, ``{name}Period.start``, ``{name}Instant``, ``{name}`` present."""
    for name in names:
        for key in (f"{name}DateTime", f"{name}Instant", name):
            value = resource.get(key)
            if isinstance(value, str):
                return value
        period = resource.get(f"{name}Period")
        if isinstance(period, Mapping) and period.get("start"):
            return period["start"]
    return None


def _value(holder: Resource) -> Row:
    """``value``, ``unit``, ``value_code``, ``value_display`` of an Observation or component value[x]."""
    row: Row = {"value": None, "unit": None, "value_code": None, "value_display": None}
    if isinstance(q := holder.get("valueQuantity"), Mapping):
        row["value"] = q.get("value")
        row["unit"] = q.get("unit") or q.get("code")
    elif isinstance(cc := holder.get("valueCodeableConcept"), Mapping):
        c = concept(cc, "c")
        row["value_code"], row["value_display"] = c["c"], c["c_display"]
    elif "valueString" in holder:
        row["value_display"] = holder["valueString"]
    elif "valueBoolean" in holder:
        row["value_display"] = str(holder["valueBoolean"]).lower()
    elif "valueInteger" in holder:
        row["value"] = holder["valueInteger"]
    return row


def _status(resource: Resource, name: str) -> Any:
    return concept(resource.get(name), name)[name]


def _patient(resource: Resource) -> Row:
    return {"patient": ref_id(resource.get("subject")) or ref_id(resource.get("patient"))}


def _observation(r: Resource) -> Row:
    return {"status": r.get("status"), "category": concept(_first(r.get("category")), "c")["c"],
            **concept(r.get("code"), "code"), **_value(r), "panel": None,
            "effective": _when(r, "effective"), "issued": r.get("issued"),
            "interpretation": concept(_first(r.get("interpretation")), "c")["c"]}


def _condition(r: Resource) -> Row:
    return {"clinical_status": _status(r, "clinicalStatus"),
            "verification_status": _status(r, "verificationStatus"),
            "category": concept(_first(r.get("category")), "c")["c"], **concept(r.get("code"), "code"),
            "onset": _when(r, "onset"), "abatement": _when(r, "abatement"), "recorded": r.get("recordedDate")}


def _medication(r: Resource) -> Row:
    med = r.get("medicationCodeableConcept")
    row = concept(med, "code")
    if med is None and r.get("medicationReference"):
        row["code_display"] = r["medicationReference"].get("display") or ref_id(r["medicationReference"])
    dosage = _first(r.get("dosageInstruction")) or _first(r.get("dosage")) or {}
    return {"resource_type": r.get("resourceType"), "status": r.get("status"), "intent": r.get("intent"),
            **row, "date": r.get("authoredOn") or _when(r, "effective") or r.get("dateAsserted"),
            "dosage": dosage.get("text") if isinstance(dosage, Mapping) else None}


def _allergy(r: Resource) -> Row:
    reaction = _first(r.get("reaction")) or {}
    return {"clinical_status": _status(r, "clinicalStatus"),
            "verification_status": _status(r, "verificationStatus"), "type": r.get("type"),
            "category": _first(r.get("category")), "criticality": r.get("criticality"),
            **concept(r.get("code"), "code"),
            "reaction": concept(_first(reaction.get("manifestation")), "c")["c_display"],
            "onset": _when(r, "onset"), "recorded": r.get("recordedDate")}


def _procedure(r: Resource) -> Row:
    return {"status": r.get("status"), **concept(r.get("code"), "code"), "performed": _when(r, "performed")}


def _immunization(r: Resource) -> Row:
    return {"status": r.get("status"), **concept(r.get("vaccineCode"), "code"),
            "occurrence": _when(r, "occurrence"), "primary_source": r.get("primarySource")}


def _document(r: Resource) -> Row:
    attachment = (_first(r.get("content")) or {}).get("attachment") or {}
    return {"status": r.get("status"), **concept(r.get("type"), "code"),
            "category": concept(_first(r.get("category")), "c")["c"], "date": r.get("date"),
            "description": r.get("description"), "title": attachment.get("title"),
            "content_type": attachment.get("contentType"), "url": attachment.get("url"),
            "size": attachment.get("size")}


def _report(r: Resource) -> Row:
    form = _first(r.get("presentedForm")) or {}
    return {"status": r.get("status"), "category": concept(_first(r.get("category")), "c")["c"],
            **concept(r.get("code"), "code"), "effective": _when(r, "effective"), "issued": r.get("issued"),
            "conclusion": r.get("conclusion"),
            "imaging_studies": [ref_id(x) for x in r.get("imagingStudy") or []],
            "results": [ref_id(x) for x in r.get("result") or []],
            "content_type": form.get("contentType"), "url": form.get("url")}


def _person(r: Resource) -> Row:
    name = next((n for n in r.get("name") or [] if n.get("use") in (None, "official", "usual")), None) or {}
    given = " ".join(name.get("given") or [])
    mrn = next((i.get("value") for i in r.get("identifier") or []
                if any(c.get("code") == "MR" for c in (i.get("type") or {}).get("coding") or [])), None)
    address = _first(r.get("address")) or {}
    return {"mrn": mrn, "name": name.get("text") or " ".join(x for x in (given, name.get("family")) if x),
            "family": name.get("family"), "given": given or None, "gender": r.get("gender"),
            "birth_date": r.get("birthDate"),
            "deceased": r.get("deceasedDateTime") or r.get("deceasedBoolean"),
            "city": address.get("city"), "state": address.get("state"),
            "postal_code": address.get("postalCode")}


def _generic(r: Resource) -> Row:
    return {"status": r.get("status"), **concept(r.get("code"), "code"),
            "date": _when(r, "effective", "occurrence", "performed", "onset") or r.get("date")}


_Flattener = Callable[[Resource], Row]
#: per resource type: the row builder and which of its columns are dates
FLATTENERS: dict[str, tuple[_Flattener, tuple[str, ...]]] = {
    "Observation": (_observation, ("effective", "issued")),
    "Condition": (_condition, ("onset", "abatement", "recorded")),
    "MedicationRequest": (_medication, ("date",)),
    "MedicationStatement": (_medication, ("date",)),
    "AllergyIntolerance": (_allergy, ("onset", "recorded")),
    "Procedure": (_procedure, ("performed",)),
    "Immunization": (_immunization, ("occurrence",)),
    "DocumentReference": (_document, ("date",)),
    "DiagnosticReport": (_report, ("effective", "issued")),
    "Patient": (_person, ("birth_date",)),
}


def rows(resource: Resource) -> list[Row]:
    """The rows of one resource (one, except Observations split into their components)."""
    rtype = str(resource.get("resourceType", ""))
    build, _ = FLATTENERS.get(rtype, (_generic, ("date",)))
    head: Row = {"id": resource.get("id")}
    if rtype != "Patient":
        head.update(_patient(resource))
    tail = {"last_updated": (resource.get("meta") or {}).get("lastUpdated")}
    row = {**head, **build(resource), **tail}
    components = resource.get("component") if rtype == "Observation" else None
    if components and row["value"] is None and row["value_display"] is None:
        out = []
        for comp in components:
            out.append({**row, **concept(comp.get("code"), "code"), **_value(comp), "panel": row["code"]})
        return out
    return [row]


def columns(resource_type: str) -> list[str]:
    """The columns :func:`to_frame` gives ``resource_type`` (also when there are no rows)."""
    build, _ = FLATTENERS.get(resource_type, (_generic, ()))
    head = ["id"] if resource_type == "Patient" else ["id", "patient"]
    return [*head, *build({"resourceType": resource_type}).keys(), "last_updated"]


def to_frame(resources: Iterable[Resource], resource_type: str | None = None) -> pd.DataFrame:
    """A DataFrame of ``resources`` (all of ``resource_type``, or of the first one's type)."""
    import pandas as pd

    items = list(resources)
    rtype = resource_type or (str(items[0].get("resourceType")) if items else "")
    cols = columns(rtype)
    data = [row for r in items for row in rows(r)]
    frame = (pd.DataFrame(data, columns=cols) if data
             else pd.DataFrame({c: pd.Series(dtype="object") for c in cols}))
    _, dates = FLATTENERS.get(rtype, (_generic, ("date",)))
    for name in (*dates, "last_updated"):
        if name in frame:
            frame[name] = to_datetime(frame[name])
    for name in ("value", "size"):
        if name in frame:
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def to_datetime(values: pd.Series) -> pd.Series:
    """FHIR date/dateTime/instant strings (partial dates too) as UTC datetimes; unparsable -> NaT."""
    import pandas as pd

    return pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
