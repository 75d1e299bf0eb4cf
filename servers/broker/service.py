"""The broker's domain: FHIR ImagingStudy searches over QIDO-RS, and who owns which study.

No HTTP here: handlers parse requests, call :class:`ImagingService`, and write its answers.

Ownership is decided on every request from the PACS itself (DESIGN.md "The flow" 6): a study belongs
to a FHIR patient when a QIDO-RS study query for its StudyInstanceUID returns PatientID (0010,0020)
equal to the patient's identifier at the EHR (:mod:`servers.broker.patients`). Series and instances
named in a path must also be found under that study by QIDO. Answers are cached for a short TTL, keyed
by UIDs (never by token). Whatever is not found, or not the patient's, is the same 404.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from s4s_jupyter.core import dicomjson
from s4s_jupyter.core.errors import DICOMwebError, FHIRError, FHIRNotFound
from s4s_jupyter.core.imaging_study import (
    INSTANCE_FIELDS,
    SERIES_FIELDS,
    STUDY_FIELDS,
    MappingOptions,
    dicom_datetime,
    imaging_study,
    parse_fhir_instant,
)
from servers.broker.cache import TTLCache
from servers.broker.patients import PatientDirectory
from servers.broker.rewrite import URLRewriter
from servers.broker.upstream import DicomJSON, QueryLevel, Upstream

PATIENT_ID = "00100020"
STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"


# -- _lastUpdated (FHIR R4 3.1.1.4.2 date search) ------------------------------------------------------

_DATE = re.compile(r"^(eq|ne|gt|lt|ge|le)?(\d{4})(?:-(\d{2})(?:-(\d{2})"
                   r"(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")


@dataclass(frozen=True)
class DateRange:
    """One ``_lastUpdated`` value: a prefix and the half-open range ``[low, high)`` its precision covers."""

    prefix: str
    low: datetime
    high: datetime

    @classmethod
    def parse(cls, text: str) -> DateRange:
        m = _DATE.match(text.strip())
        if not m:
            raise FHIRError(f"_lastUpdated value {text!r} is not [prefix]YYYY[-MM[-DD[Thh:mm[:ss][zone]]]] "
                            "with a prefix of eq, ne, gt, lt, ge, le")
        prefix, y, mo, d, hh, mi, ss, frac, zone = m.groups()
        try:
            # FHIR: without a zone, the server's; the broker's is UTC
            tz = (parse_fhir_instant("2000-01-01T00:00:00" + zone).tzinfo or UTC) if zone else UTC
            low = datetime(int(y), int(mo or 1), int(d or 1), int(hh or 0), int(mi or 0), int(ss or 0),
                           int(float(frac) * 1e6) if frac else 0, tzinfo=tz)
        except ValueError:
            raise FHIRError(f"_lastUpdated value {text!r} is not a valid date") from None
        if ss is not None:
            high = low + timedelta(microseconds=1) if frac else low + timedelta(seconds=1)
        elif mi is not None:
            high = low + timedelta(minutes=1)
        elif d is not None:
            high = low + timedelta(days=1)
        elif mo is not None:
            high = (low.replace(year=low.year + 1, month=1) if low.month == 12
                    else low.replace(month=low.month + 1))
        else:
            high = low.replace(year=low.year + 1)
        return cls(prefix or "eq", low, high)

    def matches(self, t: datetime) -> bool:
        inside = self.low <= t < self.high
        return {"eq": inside, "ne": not inside, "gt": t >= self.high, "ge": t >= self.low,
                "lt": t < self.low, "le": t < self.high}[self.prefix]

    def earliest_date(self) -> str | None:
        """A QIDO StudyDate lower bound that keeps every possible match (a day early for time zones)."""
        if self.prefix in ("gt", "ge", "eq"):
            return (self.low - timedelta(days=1)).strftime("%Y%m%d")
        return None


@dataclass(frozen=True)
class StudySearch:
    """A parsed ``ImagingStudy`` search (after the patient check)."""

    patient: str
    study_uids: tuple[str, ...] = ()
    last_updated: tuple[DateRange, ...] = ()
    count: int = 50
    offset: int = 0


@dataclass(frozen=True)
class SearchPage:
    resources: list[dict[str, Any]]
    total: int


class ImagingService:
    def __init__(self, upstream: Upstream, patients: PatientDirectory, rewriter: URLRewriter, *,
                 endpoint_id: str, owner_ttl: float = 30.0, mapping: MappingOptions | None = None) -> None:
        self.upstream = upstream
        self.patients = patients
        self.rewriter = rewriter
        self.endpoint_id = endpoint_id
        self.mapping = mapping or MappingOptions()
        #: (study, series, instance) -> the PatientID the PACS reports ("" for "not found")
        self.owners: TTLCache[tuple[str, str, str], str] = TTLCache(owner_ttl)

    # -- patient mapping -------------------------------------------------------------------------

    async def dicom_patient_id(self, patient: str) -> str | None:
        return await self.patients.dicom_patient_id(patient)

    # -- ownership -------------------------------------------------------------------------------

    async def _study_owner(self, study: str) -> str:
        key = (study, "", "")
        owner = self.owners.get(key)
        if owner is None:
            results = await self.upstream.query(
                QueryLevel.STUDY, [("StudyInstanceUID", study), ("includefield", PATIENT_ID)])
            owner = next((str(dicomjson.first(r, PATIENT_ID) or "") for r in results
                          if dicomjson.first(r, STUDY_UID) == study), "")
            self.owners.put(key, owner)
        return owner

    async def _member(self, study: str, series: str, instance: str = "") -> bool:
        key = (study, series, instance)
        cached = self.owners.get(key)
        if cached is not None:
            return cached == "member"
        if instance:
            results = await self.upstream.query(
                QueryLevel.INSTANCE, [("SOPInstanceUID", instance), ("includefield", STUDY_UID),
                                      ("includefield", SERIES_UID)], study_uid=study, series_uid=series)
            found = any(dicomjson.first(r, SOP_UID) == instance
                        and dicomjson.first(r, SERIES_UID, series) == series
                        and dicomjson.first(r, STUDY_UID, study) == study for r in results)
        else:
            results = await self.upstream.query(
                QueryLevel.SERIES, [("SeriesInstanceUID", series), ("includefield", STUDY_UID)],
                study_uid=study)
            found = any(dicomjson.first(r, SERIES_UID) == series
                        and dicomjson.first(r, STUDY_UID, study) == study for r in results)
        self.owners.put(key, "member" if found else "")
        return found

    async def check_owner(self, patient: str, study: str, series: str | None = None,
                          instance: str | None = None) -> None:
        """Raise a 404 unless ``study`` (and ``series``/``instance`` under it) belongs to ``patient``."""
        not_found = DICOMwebError("not found", status=404)
        pid = await self.dicom_patient_id(patient)
        if not pid:
            raise not_found
        if await self._study_owner(study) != pid:
            raise not_found
        if series and not await self._member(study, series):
            raise not_found
        if series and instance and not await self._member(study, series, instance):
            raise not_found

    # -- FHIR ------------------------------------------------------------------------------------

    async def _build(self, study: DicomJSON, patient: str) -> dict[str, Any]:
        uid = str(dicomjson.first(study, STUDY_UID))
        series, instances = await asyncio.gather(
            self.upstream.query(QueryLevel.SERIES, [("includefield", f) for f in SERIES_FIELDS],
                                study_uid=uid),
            self.upstream.query(QueryLevel.INSTANCE, [("includefield", f) for f in INSTANCE_FIELDS],
                                study_uid=uid))
        return imaging_study(study, series, instances, patient_id=patient, endpoint_id=self.endpoint_id,
                             options=self.mapping)

    async def _patient_studies(self, pid: str, extra: Sequence[tuple[str, str]] = ()) -> list[DicomJSON]:
        params = [("PatientID", pid), *extra, *(("includefield", f) for f in STUDY_FIELDS)]
        results = await self.upstream.query(QueryLevel.STUDY, params)
        # exact match only: QIDO treats * and ? in a PatientID as wildcards, and some PACS ignore filters
        return [r for r in results if dicomjson.first(r, PATIENT_ID) == pid
                and isinstance(dicomjson.first(r, STUDY_UID), str)]

    def _started(self, study: DicomJSON) -> datetime | None:
        text = dicom_datetime(dicomjson.first(study, "StudyDate"), dicomjson.first(study, "StudyTime"),
                              dicomjson.first(study, "TimezoneOffsetFromUTC"), self.mapping.default_tz)
        if not text:
            return None
        if "T" not in text:
            return datetime.fromisoformat(text).replace(tzinfo=self.mapping.default_tz)
        return parse_fhir_instant(text)

    async def search(self, q: StudySearch) -> SearchPage:
        pid = await self.dicom_patient_id(q.patient)
        if not pid:
            return SearchPage([], 0)
        extra: list[tuple[str, str]] = []
        lower = [d for r in q.last_updated if (d := r.earliest_date())]
        if lower:
            extra.append(("StudyDate", max(lower) + "-"))
        if q.study_uids:
            found: dict[str, DicomJSON] = {}
            for uid in q.study_uids:
                for r in await self._patient_studies(pid, [("StudyInstanceUID", uid), *extra]):
                    if dicomjson.first(r, STUDY_UID) == uid:
                        found[uid] = r
            studies = list(found.values())
        else:
            studies = await self._patient_studies(pid, extra)
        if q.last_updated:
            kept = []
            for s in studies:
                t = self._started(s)
                if t is not None and all(r.matches(t) for r in q.last_updated):
                    kept.append(s)
            studies = kept
        epoch = datetime.min.replace(tzinfo=UTC)
        studies.sort(key=lambda s: (self._started(s) or epoch, str(dicomjson.first(s, STUDY_UID))),
                     reverse=True)
        page = studies[q.offset:q.offset + q.count]
        resources = list(await asyncio.gather(*(self._build(s, q.patient) for s in page)))
        return SearchPage(resources, len(studies))

    async def read(self, patient: str, study_uid: str) -> dict[str, Any]:
        """``ImagingStudy/{uid}`` for ``patient``; 404 unless the study is the patient's."""
        pid = await self.dicom_patient_id(patient)
        if pid:
            for study in await self._patient_studies(pid, [("StudyInstanceUID", study_uid)]):
                if dicomjson.first(study, STUDY_UID) == study_uid:
                    return await self._build(study, patient)
        raise FHIRNotFound(f"ImagingStudy/{study_uid} is not known")

    # -- DICOMweb --------------------------------------------------------------------------------

    async def qido(self, patient: str, level: QueryLevel, params: Sequence[tuple[str, str]],
                   study_uid: str | None = None, series_uid: str | None = None) -> list[DicomJSON]:
        """A QIDO-RS search restricted to ``patient``: PatientID forced into the query and checked in
        every result (results without it are dropped: fail closed); URLs rewritten to the broker."""
        pid = await self.dicom_patient_id(patient)
        if not pid:
            return []
        if study_uid:
            await self.check_owner(patient, study_uid, series_uid)
        forced = [(k, v) for k, v in params if k.upper() not in ("PATIENTID", PATIENT_ID)]
        forced += [("PatientID", pid), ("includefield", PATIENT_ID)]
        results = await self.upstream.query(level, forced, study_uid=study_uid, series_uid=series_uid)
        if study_uid:
            # under an owned study every result is the patient's, whether or not the PACS repeats
            # PatientID at series/instance level; a result naming another study is not
            kept = [r for r in results if dicomjson.first(r, STUDY_UID, study_uid) == study_uid
                    and dicomjson.first(r, PATIENT_ID, pid) == pid]
        else:
            kept = [r for r in results if dicomjson.first(r, PATIENT_ID) == pid]
        return self.rewriter.datasets(kept)

    async def metadata(self, patient: str, path: str, study: str, series: str | None = None,
                       instance: str | None = None) -> list[DicomJSON]:
        await self.check_owner(patient, study, series, instance)
        results = await self.upstream.metadata(path)
        return self.rewriter.datasets(results)
