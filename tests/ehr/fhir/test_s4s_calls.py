"""The Sync for Science calls over real HTTP against the EHR app: right resources, filters, paging, Bundles.

Each answer is compared with the generator's own resources for the patient (the oracle), and every Bundle
is validated as R4 by two outside validators.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from servers.demo_data.clinical import ACCESSION_SYSTEM, MRN_SYSTEM
from servers.demo_data.plan import DemoPlan
from tests.ehr.conftest import RunningEHR
from tests.ehr.fhir.conftest import FHIRClient, validate_r4

Chart = dict[str, list[dict[str, Any]]]
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"


def _of(chart: Chart, patient: str, rtype: str, keep: Callable[[dict[str, Any]], bool] = lambda r: True
        ) -> set[str]:
    return {r["id"] for r in chart[patient] if r["resourceType"] == rtype and keep(r)}


def _codes(r: dict[str, Any], element: str) -> set[str]:
    v = r.get(element, [])
    return {c["code"] for cc in (v if isinstance(v, list) else [v]) for c in cc.get("coding", [])}


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


S4S_CALLS = [
    ("AllergyIntolerance", {}),
    ("Condition", {}),
    ("MedicationRequest", {}),
    ("MedicationStatement", {}),
    ("Procedure", {}),
    ("Immunization", {}),
    ("DocumentReference", {}),
    ("DiagnosticReport", {}),
    ("Observation", {"category": "laboratory"}),
    ("Observation", {"category": "vital-signs"}),
    ("Observation", {"category": "social-history"}),
    ("Observation", {"code": "http://loinc.org|72166-2"}),
]


@pytest.mark.parametrize(("rtype", "extra"), S4S_CALLS)
def test_each_s4s_call_returns_exactly_the_patients_resources(
        fhir_a: FHIRClient, chart: Chart, patient_a: str, rtype: str, extra: dict[str, str]) -> None:
    r = fhir_a.get(rtype, {"patient": patient_a, **extra})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    bundle = r.json()
    validate_r4(bundle)
    assert bundle["type"] == "searchset"
    got = {e["resource"]["id"] for e in bundle["entry"]}
    if "category" in extra:
        expected = _of(chart, patient_a, rtype, lambda o: extra["category"] in _codes(o, "category"))
    elif "code" in extra:
        expected = _of(chart, patient_a, rtype, lambda o: "72166-2" in _codes(o, "code"))
    else:
        expected = _of(chart, patient_a, rtype)
    assert expected and got == expected
    assert bundle["total"] == len(expected)
    for e in bundle["entry"]:
        assert e["fullUrl"] == f"{fhir_a.base}/{rtype}/{e['resource']['id']}"
        assert e["search"] == {"mode": "match"}


def test_patient_read_and_search_by_identifier(fhir_a: FHIRClient, patient_a: str,
                                               small_plan: DemoPlan) -> None:
    me = small_plan.patient(patient_a)
    r = fhir_a.get(f"Patient/{patient_a}")
    assert r.status_code == 200 and r.json()["identifier"][0]["value"] == me.mrn
    validate_r4(r.json())
    for params in ({"identifier": f"{MRN_SYSTEM}|{me.mrn}"}, {"identifier": me.mrn}, {"_id": patient_a}, {}):
        bundle = fhir_a.get("Patient", params).json()
        validate_r4(bundle)
        assert [e["resource"]["id"] for e in bundle["entry"]] == [patient_a], params
    assert fhir_a.get("Patient", {"identifier": f"{MRN_SYSTEM}|MRN-NOPE"}).json()["total"] == 0


def test_patient_parameter_forms(fhir_a: FHIRClient, patient_a: str, chart: Chart) -> None:
    expected = _of(chart, patient_a, "Condition")
    for params in ({"patient": f"Patient/{patient_a}"}, {"subject": f"Patient/{patient_a}"},
                   {"subject:Patient": patient_a}, {"patient": f"{fhir_a.base}/Patient/{patient_a}"}):
        bundle = fhir_a.get("Condition", params).json()
        assert {e["resource"]["id"] for e in bundle["entry"]} == expected, params


def test_code_token_forms(fhir_a: FHIRClient, patient_a: str) -> None:
    def total(code: str) -> int:
        r = fhir_a.get("Observation", {"patient": patient_a, "code": code})
        assert r.status_code == 200, r.text
        return int(r.json()["total"])

    hba1c = total("http://loinc.org|4548-4")
    assert hba1c >= 5 and total("4548-4") == hba1c
    assert total("http://loinc.org|4548-4,http://loinc.org|72166-2") == hba1c + total("72166-2")
    assert total("|4548-4") == 0 and total("http://snomed.info/sct|4548-4") == 0
    everything = fhir_a.get("Observation", {"patient": patient_a}).json()["total"]
    assert total("http://loinc.org|") == everything


def test_category_with_system(fhir_a: FHIRClient, patient_a: str) -> None:
    plain = fhir_a.get("Observation", {"patient": patient_a, "category": "laboratory"}).json()["total"]
    full = fhir_a.get("Observation", {"patient": patient_a, "category": f"{OBS_CAT}|laboratory"}).json()
    assert full["total"] == plain > 0
    radiology = fhir_a.get("DiagnosticReport", {"patient": patient_a, "category": "http://loinc.org|LP29684-5"})
    assert radiology.json()["total"] == len(radiology.json()["entry"]) > 0


def test_radiology_reports_by_accession_and_conditions_by_icd10(fhir_a: FHIRClient, patient_a: str,
                                                                small_plan: DemoPlan) -> None:
    """The joins a cohort analysis makes: accession number -> report -> StudyInstanceUID."""
    for study in small_plan.patient(patient_a).studies:
        accession = f"{ACCESSION_SYSTEM}|{study.accession_number}"
        bundle = fhir_a.get("DiagnosticReport", {"patient": patient_a, "identifier": accession}).json()
        assert bundle["total"] == 1
        report = bundle["entry"][0]["resource"]
        assert report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{study.study_uid}"
        assert report["conclusion"] == study.finding


def test_date_filters_match_the_oracle(fhir_a: FHIRClient, patient_a: str, chart: Chart) -> None:
    labs = [r for r in chart[patient_a] if r["resourceType"] == "Observation"
            and "laboratory" in _codes(r, "category")]
    times = sorted({r["effectiveDateTime"] for r in labs})
    middle = times[len(times) // 2]
    for prefix, keep in (("ge", lambda t: t >= _ts(middle)), ("gt", lambda t: t > _ts(middle)),
                         ("lt", lambda t: t < _ts(middle)), ("le", lambda t: t <= _ts(middle)),
                         ("eq", lambda t: t == _ts(middle))):
        got = fhir_a.search_all("Observation", {"patient": patient_a, "category": "laboratory",
                                                "date": f"{prefix}{middle}"})
        assert {r["id"] for r in got} == {r["id"] for r in labs if keep(_ts(r["effectiveDateTime"]))}, prefix
    year = middle[:4]
    got = fhir_a.search_all("Observation", {"patient": patient_a, "category": "laboratory", "date": year})
    assert {r["id"] for r in got} == {r["id"] for r in labs if r["effectiveDateTime"].startswith(year)}
    assert got


def test_incremental_sync_with_last_updated(fhir_a: FHIRClient, patient_a: str, chart: Chart) -> None:
    mine = [r for r in chart[patient_a] if r["resourceType"] == "Observation"]
    stamps = sorted(r["meta"]["lastUpdated"] for r in mine)
    since = stamps[len(stamps) * 3 // 4]
    got = fhir_a.search_all("Observation", {"patient": patient_a, "_lastUpdated": f"gt{since}"})
    expected = {r["id"] for r in mine if _ts(r["meta"]["lastUpdated"]) > _ts(since)}
    assert {r["id"] for r in got} == expected
    assert 0 < len(expected) < len(mine)
    everything = fhir_a.search_all("Observation", {"patient": patient_a, "_lastUpdated": "gt2000-01-01"})
    assert len(everything) == len(mine)


def test_paging_through_next_returns_every_resource_exactly_once(fhir_a: FHIRClient, patient_a: str,
                                                                chart: Chart) -> None:
    expected = _of(chart, patient_a, "Observation")
    r = fhir_a.get("Observation", {"patient": patient_a, "_count": "7"})
    seen: list[str] = []
    pages = 0
    while True:
        bundle = r.json()
        validate_r4(bundle)
        assert bundle["total"] == len(expected)
        assert len(bundle.get("entry", [])) <= 7
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        pages += 1
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        if "next" not in links:
            break
        query = parse_qs(urlsplit(links["next"]).query)
        assert query["patient"] == [patient_a] and query["_count"] == ["7"]  # the link carries the query
        r = fhir_a.get(links["next"])
        assert r.status_code == 200
    assert len(seen) == len(set(seen)) and set(seen) == expected
    assert pages == -(-len(expected) // 7)


def test_count_zero_gives_the_total_only(fhir_a: FHIRClient, patient_a: str, chart: Chart) -> None:
    bundle = fhir_a.get("Procedure", {"patient": patient_a, "_count": "0"}).json()
    assert bundle["total"] == len(_of(chart, patient_a, "Procedure")) and "entry" not in bundle


def test_read_each_type_by_id(fhir_a: FHIRClient, patient_a: str, chart: Chart) -> None:
    seen_types = set()
    for resource in chart[patient_a]:
        if resource["resourceType"] in seen_types:
            continue
        seen_types.add(resource["resourceType"])
        r = fhir_a.get(f"{resource['resourceType']}/{resource['id']}")
        assert r.status_code == 200, r.text
        assert r.json() == resource
        assert r.headers["etag"] == f'W/"{resource["meta"]["versionId"]}"'
    assert len(seen_types) == 11  # the S4S types and the caregiver's RelatedPerson


def test_post_search_with_a_form_body(fhir_a: FHIRClient, patient_a: str, chart: Chart) -> None:
    r = fhir_a.post("Observation/_search", data={"patient": patient_a, "category": "vital-signs"})
    assert r.status_code == 200, r.text
    expected = _of(chart, patient_a, "Observation", lambda o: "vital-signs" in _codes(o, "category"))
    assert {e["resource"]["id"] for e in r.json()["entry"][:50]} <= expected
    assert r.json()["total"] == len(expected)


def test_unknown_parameters_are_ignored_and_reported_or_refused_when_strict(fhir_a: FHIRClient,
                                                                            patient_a: str) -> None:
    r = fhir_a.get("Condition", {"patient": patient_a, "_sort": "-date", "foo": "bar"})
    assert r.status_code == 200
    bundle = r.json()
    validate_r4(bundle)
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1 and "foo" in str(outcomes[0]["resource"])
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert "foo" not in self_link and "_sort" not in self_link  # the self link shows what was applied
    strict = fhir_a.get("Condition", {"patient": patient_a, "foo": "bar"}, Prefer="handling=strict")
    assert strict.status_code == 400 and strict.json()["resourceType"] == "OperationOutcome"
    assert "foo" in strict.text


def test_s4s_calls_with_a_token_from_a_real_launch(ehr: RunningEHR, chart: Chart) -> None:
    """The token endpoint's own token (login, consent through the pages) opens the FHIR API."""
    from tests.ehr.oauth.helpers import tokens

    body = tokens(ehr)
    app = FHIRClient(ehr.fhir_base, body["access_token"])
    patient = body["patient"]
    assert app.get(f"Patient/{patient}").status_code == 200
    for rtype, extra in S4S_CALLS:
        r = app.get(rtype, {"patient": patient, **extra})
        assert r.status_code == 200, (rtype, r.text)
        own = {x["id"] for x in chart[patient]}
        assert all(e["resource"]["id"] in own for e in r.json().get("entry", []))


def test_fhirclient_reads_every_s4s_call_following_next_links(ehr: RunningEHR, patient_a: str,
                                                              chart: Chart) -> None:
    """fhirclient (SMART on FHIR's Python client, R4 models) as an outside judge: its searches parse our
    Bundles into R4 models and its pager follows our ``next`` links to the same resources as the oracle."""
    from fhirclient.auth import FHIROAuth2Auth
    from fhirclient.models.fhirelementfactory import FHIRElementFactory
    from fhirclient.server import FHIRServer

    from tests.ehr.fhir.conftest import mint

    server = FHIRServer(None, base_uri=ehr.fhir_base + "/")
    server.auth = FHIROAuth2Auth()
    server.auth.access_token = mint(ehr, "launch/patient patient/*.rs", patient_a).token
    for rtype, extra in S4S_CALLS:
        model = type(FHIRElementFactory.instantiate(rtype, None))
        search = model.where(struct={"patient": patient_a, "_count": "5", **extra})
        got = [r.id for r in search.perform_resources_iter(server)]
        expected = [r for r in chart[patient_a] if r["resourceType"] == rtype]
        if "category" in extra:
            expected = [r for r in expected if extra["category"] in _codes(r, "category")]
        if "code" in extra:
            expected = [r for r in expected if "72166-2" in _codes(r, "code")]
        assert len(got) == len(set(got)) and set(got) == {r["id"] for r in expected}, rtype
