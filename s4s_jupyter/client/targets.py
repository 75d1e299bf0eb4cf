"""What to retrieve: DICOMweb endpoints and the studies, series and instances asked for.

A retrieval request names its WADO-RS base (the ``Endpoint.address`` of an ImagingStudy, PS3.18 10.4)
and whether that base wants the access token (the Endpoint's ``requires-access-token`` extension).
:func:`series_targets` turns what a user has at hand (a DataFrame of studies or series from the kit, a row,
a Study Instance UID, an ImagingStudy resource) into one :class:`SeriesTarget` per series; instance lists
come from the ImagingStudy when it has them, else from a QIDO-RS query (PS3.18 10.6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from s4s_jupyter.core import dicomjson
from s4s_jupyter.core.errors import ClientError
from s4s_jupyter.core.imaging_study import study_reference
from s4s_jupyter.core.uids import check_uid


@dataclass(frozen=True)
class DICOMwebEndpoint:
    """A DICOMweb base URL (``.../dicom-web``) and whether requests to it carry the access token."""

    address: str
    requires_access_token: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", self.address.rstrip("/"))


@dataclass(frozen=True)
class InstanceInfo:
    """One instance the server holds (from ImagingStudy.series.instance or QIDO-RS)."""

    sop_uid: str
    number: int | None = None


@dataclass(frozen=True)
class SeriesTarget:
    """One series to retrieve, with what is known about it before asking the server."""

    endpoint: DICOMwebEndpoint
    study_uid: str
    series_uid: str
    instances: tuple[InstanceInfo, ...] | None = None  # None: not known yet (ask QIDO-RS)
    fhir_study: str | None = None  # ImagingStudy id
    patient: str | None = None  # FHIR Patient id
    only: frozenset[str] | None = field(default=None, hash=False)  # restrict to these SOP UIDs
    #: how many instances the series has, as the imaging server's series query said (QIDO-RS Number of
    #: Series Related Instances): a whole series can be found complete without its instance list. Not
    #: taken from an ImagingStudy's ``numberOfInstances`` or a DataFrame's column: the EHR's or an earlier
    #: query's count may be stale, and a count too low would hide an instance the server left out
    count: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_uid(self.study_uid, "StudyInstanceUID")
        check_uid(self.series_uid, "SeriesInstanceUID")

    @property
    def url(self) -> str:
        return f"{self.endpoint.address}/studies/{self.study_uid}/series/{self.series_uid}"

    def expected(self) -> tuple[InstanceInfo, ...] | None:
        """The instances this target asks for (after ``only``), in instance-number order."""
        if self.instances is None:
            return None
        chosen = [i for i in self.instances if self.only is None or i.sop_uid in self.only]
        listed = {i.sop_uid for i in self.instances}
        chosen += [InstanceInfo(uid) for uid in sorted(self.only or ()) if uid not in listed]  # asked for
        return tuple(sorted(chosen, key=lambda i: (i.number is None, i.number or 0, i.sop_uid)))


#: ``qido(endpoint, path, params) -> list of DICOM JSON objects`` (an empty list for 204)
Qido = Callable[[DICOMwebEndpoint, str, Mapping[str, str]], list[dict[str, Any]]]


def instances_from_resource(resource: Mapping[str, Any]) -> dict[str, tuple[InstanceInfo, ...]]:
    """Series UID -> instances listed in an ImagingStudy (series without an instance list are left out)."""
    out: dict[str, tuple[InstanceInfo, ...]] = {}
    for s in resource.get("series") or []:
        listed = s.get("instance") if isinstance(s, Mapping) else None
        if listed:
            out[str(s["uid"])] = tuple(
                InstanceInfo(str(i["uid"]), i.get("number") if isinstance(i.get("number"), int) else None)
                for i in listed if isinstance(i, Mapping) and i.get("uid"))
    return out


def qido_series(qido: Qido, endpoint: DICOMwebEndpoint, study_uid: str) -> list[tuple[str, int | None]]:
    """The Series Instance UIDs of a study in series-number order, each with its Number of Series Related
    Instances where the server gives it (QIDO-RS, PS3.18 10.6.1)."""
    found = qido(endpoint, f"studies/{check_uid(study_uid)}/series",
                 {"includefield": "SeriesNumber,NumberOfSeriesRelatedInstances"})
    found.sort(key=lambda s: (_int(dicomjson.first(s, "SeriesNumber")), str(dicomjson.first(s, "0020000E"))))
    return [(str(dicomjson.first(s, "SeriesInstanceUID")), _count(dicomjson.first(s, "00201209")))
            for s in found if dicomjson.first(s, "0020000E")]


def qido_instances(qido: Qido, target: SeriesTarget) -> tuple[InstanceInfo, ...]:
    found = qido(target.endpoint, f"studies/{target.study_uid}/series/{target.series_uid}/instances",
                 {"includefield": "InstanceNumber"})
    return tuple(InstanceInfo(str(dicomjson.first(i, "SOPInstanceUID")),
                              _int(dicomjson.first(i, "InstanceNumber"), None))
                 for i in found if dicomjson.first(i, "SOPInstanceUID"))


def _count(value: Any) -> int | None:
    """A count of instances as a source gave it; None for anything that is not a number >= 0."""
    n = _int(value, None)
    return n if isinstance(n, int) and n >= 0 else None


def _int(value: Any, default: Any = 0) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def series_targets(what: Any, *, endpoint: DICOMwebEndpoint | None, qido: Qido,
                   resources: Mapping[str, Mapping[str, Any]] | None = None,
                   endpoints: Iterable[Mapping[str, Any]] = ()) -> list[SeriesTarget]:
    """Normalise a retrieval request into series targets.

    ``what`` is a DataFrame or row from :meth:`Session.imaging_studies` / :meth:`Session.series` /
    :meth:`DICOMweb.studies` (columns ``study_uid`` and optionally ``series_uid``, ``sop_uid``,
    ``endpoint``, ``requires_access_token``, ``id``, ``patient``), a Study Instance UID, a list of those,
    or an ImagingStudy resource. ``endpoint`` serves rows that name none. ``resources`` maps Study
    Instance UIDs to ImagingStudy resources already read (their instance lists avoid QIDO queries).
    """
    import pandas as pd

    known = dict(resources or {})
    if isinstance(what, Mapping) and what.get("resourceType") == "ImagingStudy":
        ref = study_reference(what, list(endpoints))
        if not ref.endpoints and endpoint is None:
            raise ClientError("the ImagingStudy names no WADO-RS Endpoint the search included", status=400)
        ep = (DICOMwebEndpoint(ref.endpoints[0].address, ref.endpoints[0].requires_access_token)
              if ref.endpoints else endpoint)
        known[ref.study_uid] = what
        patient = ref.patient_reference.split("/")[-1] if ref.patient_reference else None
        rows: list[dict[str, Any]] = [{"study_uid": ref.study_uid, "id": what.get("id"), "patient": patient,
                                       "endpoint": ep.address if ep else None,
                                       "requires_access_token": ep.requires_access_token if ep else False}]
    elif isinstance(what, str):
        rows = [{"study_uid": what}]
    elif isinstance(what, pd.DataFrame):
        rows = what.to_dict("records")
    elif isinstance(what, pd.Series):
        rows = [what.to_dict()]
    elif isinstance(what, Sequence):
        rows = [{"study_uid": w} if isinstance(w, str) else dict(w) for w in what]
    else:
        raise TypeError(f"cannot retrieve {type(what).__name__}: give a DataFrame or row of studies/series, "
                        "a Study Instance UID or an ImagingStudy")

    grouped: dict[tuple[str, str, str], dict[str, Any]] = {}
    order: list[tuple[str, str, str]] = []
    study_only: list[dict[str, Any]] = []
    for row in rows:
        ep = _endpoint_of(row, endpoint)
        study_uid = check_uid(str(row["study_uid"]), "StudyInstanceUID")
        series_uid = row.get("series_uid")
        if not _present(series_uid):
            study_only.append({**row, "_ep": ep, "study_uid": study_uid})
            continue
        key = (ep.address, study_uid, str(series_uid))
        if key not in grouped:
            grouped[key] = {**row, "_ep": ep, "_only": set()}
            order.append(key)
        if _present(row.get("sop_uid")):
            grouped[key]["_only"].add(check_uid(str(row["sop_uid"]), "SOPInstanceUID"))
        else:
            grouped[key]["_only"] = None if not grouped[key]["_only"] else grouped[key]["_only"]
            grouped[key]["_all"] = True

    out: list[SeriesTarget] = []
    for row in study_only:
        ep, study_uid = row["_ep"], row["study_uid"]
        resource = known.get(study_uid)
        listed = instances_from_resource(resource) if resource else {}
        series = [(str(s["uid"]), None) for s in (resource or {}).get("series") or []] or qido_series(
            qido, ep, study_uid)
        if not series:
            raise ClientError(f"{ep.address} knows no series of study {study_uid}", status=404)
        for s_uid, count in series:
            out.append(SeriesTarget(ep, study_uid, s_uid, listed.get(s_uid), _fhir_id(row),
                                    _str(row.get("patient")), count=count))
    for key in order:
        row = grouped[key]
        resource = known.get(key[1])
        listed = instances_from_resource(resource) if resource else {}
        only = None if row.get("_all") or not row["_only"] else frozenset(row["_only"])
        out.append(SeriesTarget(row["_ep"], key[1], key[2], listed.get(key[2]), _fhir_id(row),
                                _str(row.get("patient")), only))
    return out


def _present(value: Any) -> bool:
    """False for None, NaN, pandas' NA and "" (what empty DataFrame cells hold)."""
    if value is None:
        return False
    try:
        if value != value:  # NaN
            return False
    except TypeError:  # pd.NA refuses to be a bool
        return False
    return str(value) != ""


def _str(value: Any) -> str | None:
    return str(value) if _present(value) else None


def _fhir_id(row: Mapping[str, Any]) -> str | None:
    return _str(row.get("fhir_study") if _present(row.get("fhir_study")) else row.get("id"))


def _endpoint_of(row: Mapping[str, Any], default: DICOMwebEndpoint | None) -> DICOMwebEndpoint:
    address = row.get("endpoint")
    if _present(address):
        return DICOMwebEndpoint(str(address), bool(row.get("requires_access_token")))
    if default is None:
        raise ClientError("no DICOMweb endpoint for this request: the row names none and no imaging server "
                          "is known", status=400)
    return default

