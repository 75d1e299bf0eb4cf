"""QIDO-RS against the running PACS (PS3.18 10.6, matching per PS3.4 C.2.2.2)."""

from __future__ import annotations

from typing import Any

import pytest

from s4s_jupyter.core.dicomjson import first, values
from servers.demo_data.plan import DemoPlan
from tests.pacs.conftest import PACS

STUDY_REQUIRED = ["00080020", "00080030", "00080050", "00080056", "00080061", "00080090", "00081190",
                  "00100010", "00100020", "00100030", "00100040", "0020000D", "00200010", "00201206",
                  "00201208"]
SERIES_REQUIRED = ["00080060", "0008103E", "00081190", "0020000E", "00200011", "00201209"]
INSTANCE_REQUIRED = ["00080016", "00080018", "00081190", "00200013", "00280010", "00280011", "00280100"]


def search(pacs: PACS, path: str, **params: str) -> list[dict[str, Any]]:
    r = pacs.get(path, **params)
    if r.status_code == 204:
        assert r.content == b""
        return []
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    body = r.json()
    assert isinstance(body, list) and body
    return body


def study_uids(results: list[dict[str, Any]]) -> set[str]:
    return {first(r, "StudyInstanceUID") for r in results}


def test_all_studies_with_required_attributes_and_counts(loaded_pacs: PACS, small_plan: DemoPlan) -> None:
    results = search(loaded_pacs, "/studies")
    assert study_uids(results) == {s.study_uid for _, s in small_plan.studies()}
    by_uid = {first(r, "StudyInstanceUID"): r for r in results}
    for patient, study in small_plan.studies():
        r = by_uid[study.study_uid]
        for tag in STUDY_REQUIRED:
            assert tag in r, tag
        assert first(r, "PatientID") == patient.mrn
        assert first(r, "PatientName") == patient.dicom_name
        assert first(r, "AccessionNumber") == study.accession_number
        assert first(r, "NumberOfStudyRelatedSeries") == len(study.series)
        assert first(r, "NumberOfStudyRelatedInstances") == study.number_of_instances
        assert values(r, "ModalitiesInStudy") == [study.modality]
        assert first(r, "RetrieveURL") == f"{loaded_pacs.url}/studies/{study.study_uid}"


def test_single_value_matching(loaded_pacs: PACS, small_plan: DemoPlan) -> None:
    patient = small_plan.patients[1]
    results = search(loaded_pacs, "/studies", PatientID=patient.mrn)
    assert study_uids(results) == {s.study_uid for s in patient.studies}
    assert search(loaded_pacs, "/studies", PatientID=patient.mrn.lower()) == []  # case-sensitive
    acc = patient.studies[0].accession_number
    assert study_uids(search(loaded_pacs, "/studies", AccessionNumber=acc)) == {patient.studies[0].study_uid}
    # keywords and tags name the same attribute
    assert study_uids(search(loaded_pacs, "/studies", **{"00100020": patient.mrn})) == study_uids(results)


def test_uid_list_matching(loaded_pacs: PACS, small_plan: DemoPlan) -> None:
    a, b = small_plan.studies()[0][1].study_uid, small_plan.studies()[3][1].study_uid
    assert study_uids(search(loaded_pacs, "/studies", StudyInstanceUID=f"{a},{b}")) == {a, b}
    assert study_uids(search(loaded_pacs, "/studies", StudyInstanceUID=f"{a}\\{b}")) == {a, b}


def test_wildcard_matching(loaded_pacs: PACS, small_plan: DemoPlan) -> None:
    patient = small_plan.patients[0]
    family = patient.family
    got = search(loaded_pacs, "/studies", PatientName=family[:3] + "*")
    assert {first(r, "PatientID") for r in got} >= {patient.mrn}
    assert all(first(r, "PatientName").startswith(family[:3]) for r in got)
    # person names match case-insensitively; ? stands for one character
    got = search(loaded_pacs, "/studies", PatientName=family.lower()[0] + "?" + family.lower()[2:] + "*")
    assert patient.mrn in {first(r, "PatientID") for r in got}
    assert search(loaded_pacs, "/studies", PatientName="Zz*") == []
    assert study_uids(search(loaded_pacs, "/studies", PatientID="MRN*")) == {
        s.study_uid for _, s in small_plan.studies()}


def test_date_and_time_range_matching(loaded_pacs: PACS, small_plan: DemoPlan) -> None:
    studies = sorted((s for _, s in small_plan.studies()), key=lambda s: s.started)
    lo, hi = studies[1].started.strftime("%Y%m%d"), studies[-2].started.strftime("%Y%m%d")
    expected = {s.study_uid for s in studies if lo <= s.started.strftime("%Y%m%d") <= hi}
    assert study_uids(search(loaded_pacs, "/studies", StudyDate=f"{lo}-{hi}")) == expected
    assert study_uids(search(loaded_pacs, "/studies", StudyDate=f"-{lo}")) == {
        s.study_uid for s in studies if s.started.strftime("%Y%m%d") <= lo}
    assert study_uids(search(loaded_pacs, "/studies", StudyDate=f"{hi}-")) == {
        s.study_uid for s in studies if s.started.strftime("%Y%m%d") >= hi}
    one = studies[2]
    day = one.started.strftime("%Y%m%d")
    assert one.study_uid in study_uids(search(loaded_pacs, "/studies", StudyDate=day))
    t = one.started.strftime("%H%M")
    got = search(loaded_pacs, "/studies", StudyDate=one.started.strftime("%Y%m%d"), StudyTime=f"{t}-{t}59")
    assert one.study_uid in study_uids(got)
    # a birth date range on a non-default attribute
    patient = small_plan.patients[0]
    bd = patient.birth_date.strftime("%Y%m%d")
    got = search(loaded_pacs, "/studies", PatientBirthDate=f"{bd}-{bd}")
    assert {first(r, "PatientID") for r in got} == {patient.mrn}


def test_fuzzy_matching_of_person_names(loaded_pacs: PACS, small_plan: DemoPlan) -> None:
    patient = small_plan.patients[2]
    assert search(loaded_pacs, "/studies", PatientName=patient.given.lower()) == []  # exact: no match
    got = search(loaded_pacs, "/studies", PatientName=patient.given.lower()[:3], fuzzymatching="true")
    assert patient.mrn in {first(r, "PatientID") for r in got}
    got = search(loaded_pacs, "/studies", PatientName=f"{patient.given} {patient.family}",
                 fuzzymatching="true")
    assert {first(r, "PatientID") for r in got} == {patient.mrn}


def test_includefield_keywords_tags_and_all(loaded_pacs: PACS, small_plan: DemoPlan) -> None:
    patient, study = small_plan.studies()[0]
    got = search(loaded_pacs, "/studies", StudyInstanceUID=study.study_uid,
                 includefield="StudyDescription,00100021")
    assert first(got[0], "StudyDescription") == study.description
    assert first(got[0], "IssuerOfPatientID") == "S4S-DEMO"
    assert "00081030" not in search(loaded_pacs, "/studies", StudyInstanceUID=study.study_uid)[0]
    everything = search(loaded_pacs, f"/studies/{study.study_uid}/instances", includefield="all")[0]
    assert first(everything, "Manufacturer") == "S4S Synthetic"
    assert first(everything, "PatientID") == patient.mrn
    assert "7FE00010" not in everything  # bulk data is never part of a search answer
    one = search(loaded_pacs, "/instances", PatientID=patient.mrn, includefield="SliceThickness,Manufacturer")
    assert "00180050" in one[0] and first(one[0], "Manufacturer") == "S4S Synthetic"


def test_limit_and_offset_page_through_results(loaded_pacs: PACS, small_plan: DemoPlan) -> None:
    all_uids = [first(r, "StudyInstanceUID") for r in search(loaded_pacs, "/studies")]
    pages = [search(loaded_pacs, "/studies", limit="4", offset=str(o)) for o in (0, 4)]
    assert len(pages[0]) == 4 and len(pages[1]) == len(all_uids) - 4
    assert [first(r, "StudyInstanceUID") for p in pages for r in p] == all_uids
    assert search(loaded_pacs, "/studies", offset=str(len(all_uids))) == []
    # paging also applies after matching on attributes without an index column
    got = search(loaded_pacs, "/studies", IssuerOfPatientID="S4S-DEMO", limit="2", offset="1")
    assert [first(r, "StudyInstanceUID") for r in got] == all_uids[1:3]


def test_series_and_instance_levels_and_paths(loaded_pacs: PACS, small_plan: DemoPlan) -> None:
    patient, study = small_plan.studies()[0]
    series = search(loaded_pacs, f"/studies/{study.study_uid}/series")
    assert [first(s, "SeriesInstanceUID") for s in series] == [s.series_uid for s in study.series]
    for s, plan_series in zip(series, study.series, strict=True):
        for tag in SERIES_REQUIRED:
            assert tag in s
        assert first(s, "NumberOfSeriesRelatedInstances") == len(plan_series.instance_uids)
        assert first(s, "RetrieveURL") == (f"{loaded_pacs.url}/studies/{study.study_uid}/series/"
                                           f"{plan_series.series_uid}")
        assert "00100020" not in s  # scoped to a study: no study attributes
    se = study.series[0]
    inst = search(loaded_pacs, f"/studies/{study.study_uid}/series/{se.series_uid}/instances")
    assert [first(i, "SOPInstanceUID") for i in inst] == list(se.instance_uids)
    for i in inst:
        for tag in INSTANCE_REQUIRED:
            assert tag in i
    in_study = search(loaded_pacs, f"/studies/{study.study_uid}/instances")
    assert len(in_study) == study.number_of_instances
    assert first(in_study[0], "SeriesInstanceUID") == study.series[0].series_uid
    assert "00080060" in in_study[0]  # not scoped to a series: series attributes included
    # unscoped levels carry the higher levels' attributes
    all_series = search(loaded_pacs, "/series", PatientID=patient.mrn)
    assert {first(s, "StudyInstanceUID") for s in all_series} == {s.study_uid for s in patient.studies}
    assert all(first(s, "PatientID") == patient.mrn for s in all_series)
    one = search(loaded_pacs, "/instances", SOPInstanceUID=se.instance_uids[1])
    assert len(one) == 1 and first(one[0], "StudyInstanceUID") == study.study_uid
    assert first(one[0], "InstanceNumber") == 2


def test_modality_matching_at_study_and_series_level(loaded_pacs: PACS, small_plan: DemoPlan) -> None:
    for modality in {s.modality for _, s in small_plan.studies()}:
        expected = {s.study_uid for _, s in small_plan.studies() if s.modality == modality}
        assert study_uids(search(loaded_pacs, "/studies", ModalitiesInStudy=modality)) == expected
        got = search(loaded_pacs, "/series", Modality=modality)
        assert {first(r, "StudyInstanceUID") for r in got} == expected
    assert search(loaded_pacs, "/studies", ModalitiesInStudy="PT") == []


def test_matching_on_attributes_without_an_index_column(loaded_pacs: PACS, small_plan: DemoPlan) -> None:
    _, study = small_plan.studies()[0]
    got = search(loaded_pacs, f"/studies/{study.study_uid}/series", Manufacturer="S4S*")
    assert len(got) == len(study.series) and first(got[0], "Manufacturer") == "S4S Synthetic"
    assert search(loaded_pacs, f"/studies/{study.study_uid}/series", Manufacturer="Other") == []
    se = study.series[0]
    got = search(loaded_pacs, f"/studies/{study.study_uid}/series/{se.series_uid}/instances",
                 InstanceNumber="2")
    assert [first(i, "SOPInstanceUID") for i in got] == [se.instance_uids[1]]


def test_nothing_matches_is_204(loaded_pacs: PACS) -> None:
    r = loaded_pacs.get("/studies", PatientID="no-such-patient")
    assert r.status_code == 204 and r.content == b""
    assert loaded_pacs.get("/studies/1.2.3/series").status_code == 204


@pytest.mark.parametrize("params", [
    {"NoSuchKeyword": "x"},
    {"StudyDate": "2020"},
    {"StudyDate": "2020-01-01"},
    {"StudyDate": "2020*"},
    {"StudyTime": "25x"},
    {"StudyInstanceUID": "1.2.abc"},
    {"limit": "-1"},
    {"limit": "ten"},
    {"offset": "1.5"},
    {"fuzzymatching": "maybe"},
    {"PixelData": "x"},
    {"InstanceNumber": "one"},
    {"includefield": "NotAnAttribute"},
    {"RequestAttributesSequence.ScheduledProcedureStepID": "x"},
])
def test_malformed_parameters_are_400(loaded_pacs: PACS, params: dict[str, str]) -> None:
    r = loaded_pacs.get("/studies", **params)
    assert r.status_code == 400, (params, r.status_code)
    assert r.json()["status"] == 400 and r.json()["message"]


def test_repeated_parameter_and_bad_path_uid_are_400(loaded_pacs: PACS) -> None:
    r = loaded_pacs.http.get(loaded_pacs.url + "/studies?PatientID=a&PatientID=b")
    assert r.status_code == 400
    r = loaded_pacs.get("/studies/not-a-uid/series")
    assert r.status_code == 400 and "StudyInstanceUID" in r.json()["message"]


def test_an_unacceptable_accept_header_is_406(loaded_pacs: PACS) -> None:
    r = loaded_pacs.get("/studies", accept="multipart/related; type=\"application/dicom+xml\"")
    assert r.status_code == 406


def test_impossible_dates_and_times_are_400(loaded_pacs: PACS) -> None:
    for params in ({"StudyDate": "20221341"}, {"StudyDate": "20220230-"}, {"StudyTime": "2561"}):
        assert loaded_pacs.get("/studies", **params).status_code == 400, params
