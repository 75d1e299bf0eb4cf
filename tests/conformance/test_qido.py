"""QIDO-RS side by side (PS3.18 10.6, matching per PS3.4 C.2.2.2): Orthanc and our PACS, same files.

Each case runs the same search through dicomweb-client against both servers. They must return the
same set of matches (keyed by the level's unique key); our answer must carry every required return
attribute of PS3.18 Tables 10.6.3-3/-4/-5 and every attribute asked for with ``includefield``, and
every attribute both servers return must have the same value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.conformance.compare import (
    Differences,
    QueryLevel,
    by_key,
    compare_objects,
    first,
    tag_of,
)
from tests.conformance.conftest import Pair
from tests.conformance.dataset import conformance_plan

pytestmark = pytest.mark.orthanc

PLAN = conformance_plan()
STUDIES = [s for _, s in PLAN.studies()]
PATIENTS = [p for p in PLAN.patients if p.studies]
TWO_SERIES = next(s for s in STUDIES if len(s.series) > 1)
THREE_INSTANCES = next(se for s in STUDIES for se in s.series if len(se.instance_uids) == 3)
THREE_INSTANCES_STUDY = next(s for s in STUDIES if THREE_INSTANCES in s.series)
CR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1"


def _date(study_index: int) -> str:
    return STUDIES[study_index].started.strftime("%Y%m%d")


@dataclass(frozen=True)
class Search:
    """One QIDO-RS request: level, optional parent UIDs, filters and includefield values."""

    id: str
    level: QueryLevel
    filters: dict[str, str] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    study: str | None = None
    series: str | None = None
    expect_some: bool = True

    def path(self) -> str:
        if self.level is QueryLevel.STUDY:
            return "/studies"
        parts = [f"/studies/{self.study}"] if self.study else []
        if self.series:
            parts.append(f"/series/{self.series}")
        parts.append("/series" if self.level is QueryLevel.SERIES else "/instances")
        return "".join(parts)

    def query(self) -> str:
        """The query string with ``* ? ^ , -`` left literal (see :func:`run`)."""
        pairs = [*self.filters.items(), *(("includefield", f) for f in self.fields)]
        return "&".join(f"{k}={v}" for k, v in pairs)

    def run(self, base_url: str) -> list[dict[str, Any]]:
        """Send the search and return the matches (``[]`` for 204).

        Raw httpx rather than dicomweb-client: requests percent-encodes ``*``, ``^`` and ``-``, and
        Orthanc 1.10 with DICOMweb 1.7 then matches nothing (docs/conformance.md);
        :func:`test_percent_encoded_query_values_match_the_same` checks our side with dicomweb-client.
        """
        url = f"{base_url}{self.path()}" + (f"?{self.query()}" if self.filters or self.fields else "")
        r = httpx.get(url, headers={"Accept": "application/dicom+json"}, timeout=30)
        assert r.status_code in (200, 204), f"{url}: {r.status_code} {r.text[:300]}"
        return r.json() if r.status_code == 200 else []

    def required(self) -> dict[str, str]:
        """Required keys (PS3.18 10.6.3.3): an All Series search also returns the Study keys, an All
        Instances search the Study and Series keys, a Study's Instances search the Series keys."""
        req = dict(self.level.required)
        if self.level is QueryLevel.SERIES and self.study is None:
            req |= QueryLevel.STUDY.required
        if self.level is QueryLevel.INSTANCE and self.series is None:
            req |= QueryLevel.SERIES.required
            if self.study is None:
                req |= QueryLevel.STUDY.required
        return req


SEARCHES = [
    Search("studies-all", QueryLevel.STUDY),
    Search("studies-patientid", QueryLevel.STUDY, {"PatientID": PATIENTS[1].mrn}),
    Search("studies-patientid-wildcard", QueryLevel.STUDY, {"PatientID": PATIENTS[0].mrn[:-1] + "*"}),
    Search("studies-name-family-wildcard", QueryLevel.STUDY, {"PatientName": "Nguyen*"}),
    Search("studies-name-given-wildcard", QueryLevel.STUDY, {"PatientName": "*^Noah"}),
    Search("studies-name-question-mark", QueryLevel.STUDY,
           {"PatientName": "?" + PATIENTS[2].dicom_name[1:]}),
    Search("studies-date-exact", QueryLevel.STUDY, {"StudyDate": _date(2)}),
    Search("studies-date-range", QueryLevel.STUDY, {"StudyDate": "20220101-20221231"}),
    Search("studies-date-open-end", QueryLevel.STUDY, {"StudyDate": "20230101-"}),
    Search("studies-date-open-start", QueryLevel.STUDY, {"StudyDate": "-20211231"}),
    Search("studies-time-range", QueryLevel.STUDY, {"StudyTime": "090000-110000"}),
    Search("studies-uid-list", QueryLevel.STUDY,
           {"StudyInstanceUID": f"{STUDIES[0].study_uid},{STUDIES[3].study_uid}"}),
    Search("studies-modality-cr", QueryLevel.STUDY, {"ModalitiesInStudy": "CR"}),
    Search("studies-modality-mr", QueryLevel.STUDY, {"ModalitiesInStudy": "MR"}),
    Search("studies-accession", QueryLevel.STUDY, {"AccessionNumber": STUDIES[4].accession_number}),
    Search("studies-patient-and-range", QueryLevel.STUDY,
           {"PatientID": PATIENTS[-1].mrn, "StudyDate": "20220101-20221231"}),
    Search("studies-includefield-keyword", QueryLevel.STUDY, {"PatientID": PATIENTS[0].mrn},
           ("StudyDescription",)),
    Search("studies-includefield-tag", QueryLevel.STUDY, {"PatientID": PATIENTS[0].mrn}, ("00081030",)),
    Search("studies-includefield-all", QueryLevel.STUDY, {"PatientID": PATIENTS[-1].mrn}, ("all",)),
    Search("studies-no-match", QueryLevel.STUDY, {"PatientID": "NO-SUCH-MRN"}, expect_some=False),
    Search("series-of-study", QueryLevel.SERIES, study=TWO_SERIES.study_uid),
    Search("series-all-modality", QueryLevel.SERIES, {"Modality": "CT"}),
    Search("series-by-uid", QueryLevel.SERIES, {"SeriesInstanceUID": TWO_SERIES.series[1].series_uid}),
    Search("series-number", QueryLevel.SERIES, {"SeriesNumber": "2"}),
    Search("series-by-patient", QueryLevel.SERIES, {"PatientID": PATIENTS[-1].mrn}),
    Search("series-includefield", QueryLevel.SERIES, {"Modality": "MR"}, ("BodyPartExamined",)),
    Search("series-of-study-includefield-all", QueryLevel.SERIES, study=TWO_SERIES.study_uid,
           fields=("all",)),
    Search("instances-of-study", QueryLevel.INSTANCE, study=THREE_INSTANCES_STUDY.study_uid),
    Search("instances-of-series", QueryLevel.INSTANCE, study=THREE_INSTANCES_STUDY.study_uid,
           series=THREE_INSTANCES.series_uid),
    Search("instances-by-number", QueryLevel.INSTANCE, {"InstanceNumber": "3"},
           study=THREE_INSTANCES_STUDY.study_uid),
    Search("instances-all-by-uid", QueryLevel.INSTANCE, {"SOPInstanceUID": THREE_INSTANCES.instance_uids[1]}),
    Search("instances-all-sop-class", QueryLevel.INSTANCE, {"SOPClassUID": CR_SOP_CLASS}),
    Search("instances-all-modality", QueryLevel.INSTANCE, {"Modality": "CT"}),
]


def _compare(search: Search, ref: list[dict[str, Any]], ours: list[dict[str, Any]],
             pair: Pair) -> Differences:
    diffs = Differences()
    ref_by, our_by = by_key(ref, search.level), by_key(ours, search.level)
    if set(ref_by) != set(our_by):
        diffs.add(f"matches differ: only reference {sorted(set(ref_by) - set(our_by))}, "
                  f"only ours {sorted(set(our_by) - set(ref_by))}")
    required = search.required()
    for name in search.fields:
        if name == "all":  # every optional key the server supports: nothing more to require by name
            continue
        required[tag_of(name)] = name
    for uid in sorted(set(ref_by) & set(our_by)):
        diffs.items += compare_objects(ref_by[uid], our_by[uid], ref_base=pair.reference,
                                       our_base=pair.ours, required=required, where=uid).items
    return diffs


@pytest.mark.parametrize("search", SEARCHES, ids=[s.id for s in SEARCHES])
def test_search_matches_orthanc(loaded: Pair, search: Search) -> None:
    ref = search.run(loaded.reference)
    ours = search.run(loaded.ours)
    assert bool(ref) == search.expect_some, f"the reference itself answered {len(ref)} matches"
    diffs = _compare(search, ref, ours, loaded)
    assert not diffs, f"{search.id}:\n{diffs}"


def test_counts_and_modalities_in_study_are_computed(loaded: Pair) -> None:
    """NumberOfStudyRelated*, ModalitiesInStudy (PS3.4 C.3.4) equal the plan's, on both servers."""
    for base in (loaded.reference, loaded.ours):
        found = by_key(DICOMwebClient(base).search_for_studies(), QueryLevel.STUDY)
        for study in STUDIES:
            obj = found[study.study_uid]
            assert first(obj, "00201206") == len(study.series), base
            assert first(obj, "00201208") == study.number_of_instances, base
            assert obj["00080061"]["Value"] == sorted({s.modality for s in study.series}), base


@pytest.mark.parametrize("level", ["studies", "series", "instances"])
def test_limit_and_offset_page_through_every_match_once(loaded: Pair, level: str) -> None:
    """limit/offset (PS3.18 8.3.4.4): pages of at most ``limit`` that together hold each match once."""
    tag = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}[level]
    for base in (loaded.reference, loaded.ours):
        everything = httpx.get(f"{base}/{level}", timeout=30).json()
        seen: list[str] = []
        offset = 0
        while True:
            r = httpx.get(f"{base}/{level}", params={"limit": 4, "offset": offset}, timeout=30)
            page = r.json() if r.status_code == 200 else []
            assert r.status_code in (200, 204), (base, r.status_code)
            assert len(page) <= 4, (base, len(page))
            if not page:
                break
            seen += [first(o, tag) for o in page]
            offset += 4
        assert len(seen) == len(set(seen)) == len(everything), base


def test_empty_result_is_204(loaded: Pair) -> None:
    """No match: ours answers 204 No Content (PS3.18 10.6.3.2); Orthanc's ``200 []`` is accepted for it."""
    ours = httpx.get(f"{loaded.ours}/studies", params={"PatientID": "NO-SUCH-MRN"})
    ref = httpx.get(f"{loaded.reference}/studies", params={"PatientID": "NO-SUCH-MRN"})
    assert ref.status_code == 204 or (ref.status_code == 200 and ref.json() == [])
    assert ours.status_code == 204 and ours.content == b"", (ours.status_code, ours.text[:200])


def test_search_answers_dicom_json(loaded: Pair) -> None:
    """Default QIDO-RS media type is application/dicom+json (PS3.18 8.7.3.5, 10.6.3.3)."""
    for base in (loaded.reference, loaded.ours):
        r = httpx.get(f"{base}/studies", headers={"Accept": "application/dicom+json"})
        assert r.status_code == 200
        assert r.headers["content-type"].split(";")[0].strip() == "application/dicom+json", base


@pytest.mark.parametrize("search", [s for s in SEARCHES
                                    if s.expect_some and any(c in s.query() for c in "*?^-")],
                         ids=lambda s: s.id)
def test_percent_encoded_query_values_match_the_same(loaded: Pair, search: Search) -> None:
    """dicomweb-client (requests) percent-encodes ``*^?-``; our answer must not depend on it (RFC 3986
    2.1, PS3.18 8.3.3). Orthanc 1.10 answers nothing to these requests: see docs/conformance.md."""
    client = DICOMwebClient(loaded.ours)
    fields = list(search.fields) or None
    if search.level is QueryLevel.STUDY:
        encoded = client.search_for_studies(search_filters=search.filters, fields=fields)
    elif search.level is QueryLevel.SERIES:
        encoded = client.search_for_series(search.study, search_filters=search.filters, fields=fields)
    else:
        encoded = client.search_for_instances(search.study, search.series, search_filters=search.filters,
                                              fields=fields)
    literal = search.run(loaded.ours)
    assert set(by_key(encoded, search.level)) == set(by_key(literal, search.level))
    assert literal, "the literal form found nothing"
