"""FHIR R4 ``ImagingStudy`` and ``Endpoint`` <-> DICOM (QIDO-RS answers), both directions.

The broker builds ImagingStudy resources from QIDO-RS study, series and instance answers (DICOM JSON
Model, PS3.18 F.2); the kit reads them back to find what to retrieve and where. One module, so what one
side writes the other side reads. Shapes follow FHIR R4 ImagingStudy (R4 13.x "ImagingStudy") and the
SMART Imaging Access conventions (Argonaut "SMART ImagingStudy" / "SMART WADO-RS Endpoint"):

- ``id`` is the Study Instance UID (a UID, PS3.5 9.1, is a valid FHIR id: digits and dots, <= 64);
- ``identifier`` ``{system: "urn:dicom:uid", value: "urn:oid:<uid>"}`` (FHIR R4 ImagingStudy.identifier
  comment; the ``dui`` NamingSystem), then the Accession Number (type ``ACSN``) when present;
- ``started`` from StudyDate + StudyTime, with Timezone Offset From UTC (0008,0201) when the PACS gives
  it, else a configured offset (DICOM times are local and FHIR dateTimes with a time need a zone);
- modalities and series modality as codings of ``http://dicom.nema.org/resources/ontology/DCM``;
- instance ``sopClass`` as ``{system: "urn:ietf:rfc:3986", code: "urn:oid:<sop class uid>"}``;
- one ``endpoint`` reference to an ``Endpoint`` whose ``address`` is a WADO-RS base (PS3.18 10.4: the app
  appends ``/studies/{uid}``), connection type ``dicom-wado-rs`` and the ``requires-access-token`` extension.

Imports only the standard library and :mod:`s4s_jupyter.core`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from s4s_jupyter.core import dicomjson
from s4s_jupyter.core.errors import FHIRError
from s4s_jupyter.core.uids import is_valid_uid

#: FHIR identifier system of DICOM UIDs (the value is ``urn:oid:<uid>``).
DICOM_UID_SYSTEM = "urn:dicom:uid"
#: Code system of DICOM modality and other DCM codes (PS3.16 Annex D).
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
#: The system of ImagingStudy.series.instance.sopClass codes (``urn:oid:<uid>``).
URI_SYSTEM = "urn:ietf:rfc:3986"
ENDPOINT_CONNECTION_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
ENDPOINT_PAYLOAD_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/endpoint-payload-type"
IDENTIFIER_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
#: The extension this project writes on Endpoint (DESIGN.md, SMART App Launch namespace).
REQUIRES_ACCESS_TOKEN_URL = "http://hl7.org/fhir/smart-app-launch/StructureDefinition/requires-access-token"
#: The same flag as the Argonaut SMART Imaging Access IG names it; read, never written.
ARGONAUT_REQUIRES_ACCESS_TOKEN_URL = (
    "http://fhir.org/argonaut/smart-imaging/StructureDefinition/requires-access-token")
_REQUIRES_ACCESS_TOKEN_URLS = (REQUIRES_ACCESS_TOKEN_URL, ARGONAUT_REQUIRES_ACCESS_TOKEN_URL)

#: QIDO-RS ``includefield`` values the mapping reads, per level (keywords; PS3.18 Table 10.6.1-5).
STUDY_FIELDS: tuple[str, ...] = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "TimezoneOffsetFromUTC", "AccessionNumber",
    "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "PatientID",
)
SERIES_FIELDS: tuple[str, ...] = (
    "SeriesInstanceUID", "SeriesNumber", "Modality", "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
)
INSTANCE_FIELDS: tuple[str, ...] = ("SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber")


# -- identifiers -----------------------------------------------------------------------------------


def study_identifier(study_uid: str) -> dict[str, str]:
    """The ``urn:dicom:uid`` identifier of a study."""
    return {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study_uid}"}


def parse_identifier(token: str) -> str:
    """The Study Instance UID of an ``identifier`` search value (FHIR R4 3.1.1.4.9 token search).

    Accepted forms: ``urn:dicom:uid|<uid>``, ``urn:dicom:uid|urn:oid:<uid>``, ``urn:oid:<uid>`` and
    ``|urn:oid:<uid>``. A bare ``<uid>`` without a system is refused: it is ambiguous with other
    identifier systems (accession numbers). Raises :class:`FHIRError` (400) for anything else.
    """
    value = token.strip()
    system: str | None = None
    if "|" in value:
        system, value = value.split("|", 1)
        if system not in ("", DICOM_UID_SYSTEM):
            raise FHIRError(f"identifier system {system!r} is not supported; use {DICOM_UID_SYSTEM}")
    if value.startswith("urn:oid:"):
        value = value[len("urn:oid:"):]
    elif system != DICOM_UID_SYSTEM:
        raise FHIRError("identifier must be urn:dicom:uid|<uid>, urn:dicom:uid|urn:oid:<uid> or "
                        "urn:oid:<uid>")
    if not is_valid_uid(value):
        raise FHIRError(f"identifier value {value!r} is not a valid DICOM UID (PS3.5 9.1)")
    return value


# -- DICOM date/time -> FHIR -----------------------------------------------------------------------

_TZ = re.compile(r"^([+-])(\d{2})(\d{2})$")


def _tzinfo(offset: str | None, default: timezone) -> timezone:
    m = _TZ.match(offset or "")
    if not m:
        return default
    sign = 1 if m[1] == "+" else -1
    return timezone(sign * timedelta(hours=int(m[2]), minutes=int(m[3])))


def dicom_datetime(date: str | None, time: str | None, tz_offset: str | None = None,
                   default_tz: timezone = UTC) -> str | None:
    """A FHIR ``dateTime`` from DICOM DA (``YYYYMMDD``) and TM (``HHMMSS.FFFFFF``, PS3.5 6.2).

    With a time, the zone is the DICOM ``+HHMM`` offset if given, else ``default_tz``. Without a time
    the result is a date (FHIR allows a dateTime of date precision). ``None`` when the date is missing or
    malformed.
    """
    d = (date or "").strip()
    if not re.fullmatch(r"\d{8}", d):
        return None
    try:
        day = datetime.strptime(d, "%Y%m%d")
    except ValueError:
        return None
    t = (time or "").strip().replace(":", "")
    m = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", t)
    if not m:
        return day.date().isoformat()
    hh, mm, ss = int(m[1]), int(m[2] or 0), int(m[3] or 0)
    if hh > 23 or mm > 59 or ss > 60:
        return day.date().isoformat()
    micro = int((m[4] or "0").ljust(6, "0"))
    stamp = day.replace(hour=hh, minute=mm, second=min(ss, 59), microsecond=micro,
                        tzinfo=_tzinfo(tz_offset, default_tz))
    text = stamp.isoformat(timespec="microseconds" if micro else "seconds")
    return text.replace("+00:00", "Z")


def parse_fhir_instant(value: str) -> datetime:
    """Parse a FHIR ``instant``/``dateTime`` with a zone (``Z`` or ``+HH:MM``)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- DICOM -> FHIR -----------------------------------------------------------------------------------


def _coding(modality: str) -> dict[str, str]:
    return {"system": DCM_SYSTEM, "code": modality}


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


@dataclass(frozen=True)
class MappingOptions:
    """How DICOM values become FHIR ones where DICOM leaves something open.

    ``default_tz``: zone of StudyDate/StudyTime when the PACS gives no Timezone Offset From UTC.
    """

    default_tz: timezone = UTC


def imaging_study(
    study: Mapping[str, Any],
    series: Sequence[Mapping[str, Any]],
    instances: Sequence[Mapping[str, Any]],
    *,
    patient_id: str,
    endpoint_id: str,
    options: MappingOptions | None = None,
) -> dict[str, Any]:
    """An R4 ``ImagingStudy`` from one study's QIDO-RS answers.

    ``study`` is a study-level result (PS3.18 10.6.3), ``series`` the results of
    ``/studies/{uid}/series``, ``instances`` those of ``/studies/{uid}/instances`` (each with
    SeriesInstanceUID). Counts come from the series/instance lists when given, else from the study's
    NumberOfStudyRelated* attributes. ``patient_id`` is the FHIR logical id of the subject;
    ``endpoint_id`` the id of the WADO-RS ``Endpoint`` (see :func:`wado_endpoint`).
    """
    opts = options or MappingOptions()
    uid = dicomjson.first(study, "StudyInstanceUID")
    if not isinstance(uid, str) or not is_valid_uid(uid):
        raise ValueError(f"study without a valid StudyInstanceUID: {uid!r}")
    by_series: dict[str, list[Mapping[str, Any]]] = {}
    for inst in instances:
        by_series.setdefault(str(dicomjson.first(inst, "SeriesInstanceUID", "")), []).append(inst)

    series_out: list[dict[str, Any]] = []
    for s in sorted(series, key=lambda s: (_int(dicomjson.first(s, "SeriesNumber")) or 0,
                                           str(dicomjson.first(s, "SeriesInstanceUID", "")))):
        s_uid = _str(dicomjson.first(s, "SeriesInstanceUID"))
        if not s_uid or not is_valid_uid(s_uid):
            continue
        entry: dict[str, Any] = {"uid": s_uid}
        number = _int(dicomjson.first(s, "SeriesNumber"))
        if number is not None and number >= 0:
            entry["number"] = number
        entry["modality"] = _coding(_str(dicomjson.first(s, "Modality")) or "OT")
        description = _str(dicomjson.first(s, "SeriesDescription"))
        if description:
            entry["description"] = description
        s_instances = by_series.get(s_uid, [])
        inst_out: list[dict[str, Any]] = []
        for inst in sorted(s_instances, key=lambda i: (_int(dicomjson.first(i, "InstanceNumber")) or 0,
                                                       str(dicomjson.first(i, "SOPInstanceUID", "")))):
            i_uid = _str(dicomjson.first(inst, "SOPInstanceUID"))
            sop_class = _str(dicomjson.first(inst, "SOPClassUID"))
            if not i_uid or not sop_class or not is_valid_uid(i_uid) or not is_valid_uid(sop_class):
                continue
            item: dict[str, Any] = {"uid": i_uid,
                                    "sopClass": {"system": URI_SYSTEM, "code": f"urn:oid:{sop_class}"}}
            n = _int(dicomjson.first(inst, "InstanceNumber"))
            if n is not None and n >= 0:
                item["number"] = n
            inst_out.append(item)
        count = len(inst_out) if instances else _int(dicomjson.first(s, "NumberOfSeriesRelatedInstances"))
        if count is not None:
            entry["numberOfInstances"] = count
        if inst_out:
            entry["instance"] = inst_out
        series_out.append(entry)

    modalities = [m for m in dicomjson.values(study, "ModalitiesInStudy") if isinstance(m, str) and m]
    for s in series_out:
        code = s["modality"]["code"]
        if code not in modalities:
            modalities.append(code)

    resource: dict[str, Any] = {"resourceType": "ImagingStudy", "id": uid}
    started = dicom_datetime(dicomjson.first(study, "StudyDate"), dicomjson.first(study, "StudyTime"),
                             dicomjson.first(study, "TimezoneOffsetFromUTC"), opts.default_tz)
    if started and "T" in started:
        resource["meta"] = {"lastUpdated": started}
    identifiers: list[dict[str, Any]] = [study_identifier(uid)]
    accession = _str(dicomjson.first(study, "AccessionNumber"))
    if accession:
        identifiers.append({"type": {"coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": "ACSN"}]},
                            "value": accession})
    resource["identifier"] = identifiers
    resource["status"] = "available"
    if modalities:
        resource["modality"] = [_coding(m) for m in modalities]
    resource["subject"] = {"reference": f"Patient/{patient_id}"}
    if started:
        resource["started"] = started
    resource["endpoint"] = [{"reference": f"Endpoint/{endpoint_id}"}]
    n_series = len(series_out) if series else _int(dicomjson.first(study, "NumberOfStudyRelatedSeries"))
    if n_series is not None:
        resource["numberOfSeries"] = n_series
    n_instances = (sum(s.get("numberOfInstances", 0) for s in series_out) if series
                   else _int(dicomjson.first(study, "NumberOfStudyRelatedInstances")))
    if n_instances is not None:
        resource["numberOfInstances"] = n_instances
    description = _str(dicomjson.first(study, "StudyDescription"))
    if description:
        resource["description"] = description
    if series_out:
        resource["series"] = series_out
    return resource


def wado_endpoint(endpoint_id: str, address: str, *, requires_access_token: bool = True,
                  name: str | None = None) -> dict[str, Any]:
    """The R4 ``Endpoint`` of a WADO-RS base URL (``address`` without a trailing slash)."""
    resource: dict[str, Any] = {
        "resourceType": "Endpoint",
        "id": endpoint_id,
        "extension": [{"url": REQUIRES_ACCESS_TOKEN_URL, "valueBoolean": requires_access_token}],
        "status": "active",
        "connectionType": {"system": ENDPOINT_CONNECTION_TYPE_SYSTEM, "code": "dicom-wado-rs"},
        "payloadType": [{"coding": [{"system": ENDPOINT_PAYLOAD_TYPE_SYSTEM, "code": "any"}],
                         "text": "DICOM"}],
        "payloadMimeType": ["application/dicom", "application/dicom+json", "application/octet-stream"],
        "address": address.rstrip("/"),
    }
    if name:
        resource["name"] = name
    return resource


# -- FHIR -> DICOM (what the kit needs) ----------------------------------------------------------------


@dataclass(frozen=True)
class WadoLocation:
    """Where and how to retrieve a study: the WADO-RS base and whether to send the access token."""

    address: str
    requires_access_token: bool


@dataclass(frozen=True)
class StudyReference:
    """What the kit reads from an ImagingStudy to retrieve it over WADO-RS."""

    study_uid: str
    series_uids: tuple[str, ...]
    endpoints: tuple[WadoLocation, ...]
    patient_reference: str | None = None


def study_uid_of(resource: Mapping[str, Any]) -> str:
    """The Study Instance UID of an ImagingStudy: its ``urn:dicom:uid`` identifier (``urn:oid:`` stripped).

    Falls back to the resource id when it is a UID and no identifier says otherwise. Raises
    :class:`ValueError` when there is none.
    """
    for ident in resource.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("system") == DICOM_UID_SYSTEM:
            value = str(ident.get("value") or "")
            uid = value[len("urn:oid:"):] if value.startswith("urn:oid:") else value
            if is_valid_uid(uid):
                return uid
    rid = resource.get("id")
    if isinstance(rid, str) and is_valid_uid(rid):
        return rid
    raise ValueError("ImagingStudy has no urn:dicom:uid identifier")


def requires_access_token(endpoint: Mapping[str, Any]) -> bool:
    """The ``requires-access-token`` flag of an Endpoint (either URL); absent means False (IG)."""
    for ext in endpoint.get("extension") or []:
        if isinstance(ext, Mapping) and ext.get("url") in _REQUIRES_ACCESS_TOKEN_URLS:
            return ext.get("valueBoolean") is True
    return False


def is_wado_rs(endpoint: Mapping[str, Any]) -> bool:
    """Whether an Endpoint is an active DICOM WADO-RS endpoint."""
    ct = endpoint.get("connectionType") or {}
    codings = [ct] if isinstance(ct, Mapping) and "code" in ct else list(ct) if isinstance(ct, list) else []
    active = endpoint.get("resourceType") == "Endpoint" and endpoint.get("status", "active") == "active"
    return active and any(isinstance(c, Mapping) and c.get("code") == "dicom-wado-rs" for c in codings)


def study_reference(resource: Mapping[str, Any],
                    endpoints: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]] = ()
                    ) -> StudyReference:
    """Read an ImagingStudy: its UIDs and the WADO-RS endpoints it references.

    ``endpoints`` holds the Endpoint resources a search returned (``_include``), keyed by
    ``"Endpoint/{id}"`` (or given as a list); contained Endpoints (``#id`` references) are read from the
    study itself. References to Endpoints neither included nor contained are skipped.
    """
    if resource.get("resourceType") != "ImagingStudy":
        raise ValueError("not an ImagingStudy")
    known: dict[str, Mapping[str, Any]] = {}
    if isinstance(endpoints, Mapping):
        known.update(endpoints)
    else:
        for item in endpoints:
            known[f"Endpoint/{item.get('id')}"] = item
    for contained in resource.get("contained") or []:
        if isinstance(contained, Mapping) and contained.get("resourceType") == "Endpoint":
            known[f"#{contained.get('id')}"] = contained
    found: list[WadoLocation] = []
    for ref in resource.get("endpoint") or []:
        target = str(ref.get("reference") or "") if isinstance(ref, Mapping) else ""
        ep: Mapping[str, Any] | None = known.get(target)
        if ep is None and target:  # an absolute reference: https://host/fhir/Endpoint/{id}
            ep = next((e for key, e in known.items() if target.endswith("/" + key)), None)
        if ep is not None and is_wado_rs(ep) and ep.get("address"):
            found.append(WadoLocation(str(ep["address"]).rstrip("/"), requires_access_token(ep)))
    series = tuple(str(s["uid"]) for s in resource.get("series") or []
                   if isinstance(s, Mapping) and is_valid_uid(str(s.get("uid", ""))))
    subject = resource.get("subject")
    patient_ref = str(subject.get("reference")) if isinstance(subject, Mapping) and subject.get(
        "reference") else None
    return StudyReference(study_uid_of(resource), series, tuple(found), patient_ref)
