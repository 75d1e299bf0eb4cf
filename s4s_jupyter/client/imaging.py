"""ImagingStudy search at the imaging server (FHIR R4 ImagingStudy; SMART Imaging Access) into pandas.

The study resources are read with the shared mapping of :mod:`s4s_jupyter.core.imaging_study` (the one
the broker writes with): UIDs from ``identifier`` ``urn:dicom:uid``, the WADO-RS base and the
``requires-access-token`` flag from the Endpoint the study references (``_include=ImagingStudy:endpoint``).
Filters the server does not take as search parameters (date range, modality) are applied to the results,
so they work against any server; the patient and the Study Instance UID (``identifier``) go to the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from s4s_jupyter.client.fhir import FHIRClient, Param
from s4s_jupyter.client.flatten import ref_id, to_datetime
from s4s_jupyter.core.imaging_study import DICOM_UID_SYSTEM, study_reference

if TYPE_CHECKING:
    import pandas as pd

STUDY_COLUMNS = ["id", "patient", "study_uid", "accession", "started", "modalities", "description",
                 "number_of_series", "number_of_instances", "endpoint", "requires_access_token",
                 "last_updated"]
SERIES_COLUMNS = ["id", "patient", "study_uid", "series_uid", "number", "modality", "description",
                  "number_of_instances", "endpoint", "requires_access_token"]


def _accession(resource: Mapping[str, Any]) -> str | None:
    for ident in resource.get("identifier") or []:
        codes = [c.get("code") for c in ((ident.get("type") or {}).get("coding") or [])]
        if "ACSN" in codes:
            return str(ident.get("value"))
    return None


def _utc(value: date | datetime | str | None) -> Any:
    import pandas as pd

    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


class ImagingSearch:
    """ImagingStudy searches at one FHIR server; remembers the resources it read (their instance lists
    spare QIDO-RS queries at retrieval) and the Endpoints they name."""

    def __init__(self, fhir: FHIRClient) -> None:
        self.fhir = fhir
        self.resources: dict[str, dict[str, Any]] = {}  # Study Instance UID -> ImagingStudy
        self.endpoints: dict[str, dict[str, Any]] = {}  # "Endpoint/{id}" -> Endpoint

    def studies(self, patient: str, *, since: date | datetime | str | None = None,
                until: date | datetime | str | None = None, modality: str | None = None,
                study_uid: str | None = None, last_updated: Param | None = None) -> pd.DataFrame:
        """The patient's studies, one row per study (:data:`STUDY_COLUMNS`), newest first.

        ``since``/``until``: studies started in ``[since, until]``; ``modality``: only studies with that
        modality (``"CT"``); ``study_uid``: one study; ``last_updated``: a FHIR ``_lastUpdated`` value
        (``"gt2024-01-01"``) for incremental sync.
        """
        import pandas as pd

        params: dict[str, Param | None] = {
            "patient": patient, "_include": "ImagingStudy:endpoint", "_lastUpdated": last_updated,
            "identifier": f"{DICOM_UID_SYSTEM}|urn:oid:{study_uid}" if study_uid else None,
        }
        matches, included = self.fhir.entries("ImagingStudy", params)
        for ep in included:
            if ep.get("resourceType") == "Endpoint":
                self.endpoints[f"Endpoint/{ep.get('id')}"] = ep
        rows = []
        for resource in matches:
            ref = study_reference(resource, self.endpoints)
            self.resources[ref.study_uid] = resource
            wado = ref.endpoints[0] if ref.endpoints else None
            rows.append({
                "id": resource.get("id"), "patient": ref_id(resource.get("subject")),
                "study_uid": ref.study_uid,
                "accession": _accession(resource), "started": resource.get("started"),
                "modalities": ",".join(str(m.get("code")) for m in resource.get("modality") or []) or None,
                "description": resource.get("description"),
                "number_of_series": resource.get("numberOfSeries"),
                "number_of_instances": resource.get("numberOfInstances"),
                "endpoint": wado.address if wado else None,
                "requires_access_token": wado.requires_access_token if wado else None,
                "last_updated": (resource.get("meta") or {}).get("lastUpdated"),
            })
        frame = pd.DataFrame(rows, columns=STUDY_COLUMNS)
        frame["started"] = to_datetime(frame["started"])
        frame["last_updated"] = to_datetime(frame["last_updated"])
        for name in ("number_of_series", "number_of_instances"):
            frame[name] = frame[name].astype("Int64")
        if since is not None:
            frame = frame[frame["started"] >= _utc(since)]
        if until is not None:
            bound = _utc(until)
            if (isinstance(until, date) and not isinstance(until, datetime)) or (
                    isinstance(until, str) and "T" not in until):
                bound = bound + pd.Timedelta(days=1)  # a date means the whole day
                frame = frame[frame["started"] < bound]
            else:
                frame = frame[frame["started"] <= bound]
        if modality is not None:
            frame = frame[frame["modalities"].fillna("").str.split(",").apply(lambda ms: modality in ms)]
        return frame.sort_values("started", ascending=False, ignore_index=True)

    def series(self, studies: pd.DataFrame | pd.Series) -> pd.DataFrame:
        """One row per series of the given studies (from the ImagingStudy resources read by
        :meth:`studies`), :data:`SERIES_COLUMNS`."""
        import pandas as pd

        frame = studies.to_frame().T if isinstance(studies, pd.Series) else studies
        rows = []
        for study in frame.to_dict("records"):
            resource = self.resources.get(str(study["study_uid"]), {})
            for s in resource.get("series") or []:
                rows.append({
                    "id": study.get("id"), "patient": study.get("patient"), "study_uid": study["study_uid"],
                    "series_uid": s.get("uid"), "number": s.get("number"),
                    "modality": (s.get("modality") or {}).get("code"), "description": s.get("description"),
                    "number_of_instances": s.get("numberOfInstances"), "endpoint": study.get("endpoint"),
                    "requires_access_token": study.get("requires_access_token"),
                })
        out = pd.DataFrame(rows, columns=SERIES_COLUMNS)
        for name in ("number", "number_of_instances"):
            out[name] = out[name].astype("Int64")
        return out
