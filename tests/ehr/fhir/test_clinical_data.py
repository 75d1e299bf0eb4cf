"""The synthetic clinical data: valid R4, deterministic, complete for every S4S call, joinable to DICOM."""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from servers.demo_data.clinical import (
    FINDING_PROBLEMS,
    MRN_SYSTEM,
    clinical_resources,
    is_caregiver,
    related_person_id,
)
from servers.demo_data.plan import ANCHOR, DemoOptions, DemoPlan, make_plan
from tests.ehr.fhir.conftest import validate_r4

S4S_TYPES = {"Patient", "Condition", "MedicationRequest", "MedicationStatement", "AllergyIntolerance",
             "Observation", "Procedure", "Immunization", "DocumentReference", "DiagnosticReport"}


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _codes(concepts: Any) -> set[tuple[str, str]]:
    items = concepts if isinstance(concepts, list) else [concepts]
    return {(c.get("system", ""), c["code"]) for cc in items for c in cc.get("coding", [])}


def test_every_generated_resource_is_valid_r4(demo_plan: DemoPlan) -> None:
    resources = clinical_resources(demo_plan)
    assert {r["resourceType"] for r in resources} == S4S_TYPES | {"RelatedPerson"}
    for r in resources:
        validate_r4(r)


def test_generation_is_deterministic_with_unique_ids(demo_plan: DemoPlan) -> None:
    first, second = clinical_resources(demo_plan), clinical_resources(make_plan(DemoOptions()))
    assert first == second
    keys = [(r["resourceType"], r["id"]) for r in first]
    assert len(keys) == len(set(keys))
    other_seed = clinical_resources(make_plan(DemoOptions(seed=7)))
    assert other_seed != first


def test_each_patient_has_data_for_every_s4s_call(demo_plan: DemoPlan) -> None:
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in clinical_resources(demo_plan):
        ref = r["id"] if r["resourceType"] == "Patient" else (r.get("subject") or r["patient"])["reference"]
        by_patient[ref.removeprefix("Patient/")].append(r)
    for p in demo_plan.patients:
        chart = by_patient[p.id]
        types = Counter(r["resourceType"] for r in chart)
        expected = S4S_TYPES if p.studies else S4S_TYPES - {"DiagnosticReport"}
        if any(is_caregiver(u) and p.id in u.patient_ids for u in demo_plan.users):
            expected = expected | {"RelatedPerson"}
        assert set(types) == expected, (p.id, types)
        patient = next(r for r in chart if r["resourceType"] == "Patient")
        assert patient["identifier"][0]["system"] == MRN_SYSTEM
        assert patient["identifier"][0]["value"] == p.mrn
        assert _codes(patient["identifier"][0]["type"]) == {("http://terminology.hl7.org/CodeSystem/v2-0203",
                                                              "MR")}
        assert patient["name"][0]["family"] == p.family and patient["gender"] == p.sex
        assert patient["birthDate"] == p.birth_date.isoformat()
        obs = [r for r in chart if r["resourceType"] == "Observation"]
        categories = Counter(c["code"] for o in obs for cc in o["category"] for c in cc["coding"])
        assert set(categories) == {"laboratory", "vital-signs", "social-history"}
        smoking = [o for o in obs if ("http://loinc.org", "72166-2") in _codes(o["code"])]
        assert smoking and all(o["category"][0]["coding"][0]["code"] == "social-history" for o in smoking)
        # labs over time: several values of HbA1c, creatinine, hemoglobin, with UCUM units
        for loinc, unit in (("4548-4", "%"), ("2160-0", "mg/dL"), ("718-7", "g/dL")):
            series = [o for o in obs if ("http://loinc.org", loinc) in _codes(o["code"])]
            assert len(series) >= 5
            assert len({o["effectiveDateTime"] for o in series}) == len(series)
            assert {o["valueQuantity"]["code"] for o in series} == {unit}
            assert {o["valueQuantity"]["system"] for o in series} == {"http://unitsofmeasure.org"}
        bp = [o for o in obs if ("http://loinc.org", "85354-9") in _codes(o["code"])]
        assert bp and all({c["code"]["coding"][0]["code"] for c in o["component"]} == {"8480-6", "8462-4"}
                          for o in bp)
        docs = [r for r in chart if r["resourceType"] == "DocumentReference"]
        text = base64.b64decode(docs[0]["content"][0]["attachment"]["data"]).decode()
        assert p.mrn in text and docs[0]["content"][0]["attachment"]["contentType"] == "text/plain"


def test_one_related_person_per_caregiver_and_patient(demo_plan: DemoPlan) -> None:
    """A caregiver's fhirUser (``RelatedPerson/{username}-{patient}``) exists for every patient it acts for,
    in that patient's compartment, and for nobody else."""
    related = {r["id"]: r for r in clinical_resources(demo_plan) if r["resourceType"] == "RelatedPerson"}
    expected = {related_person_id(u.username, pid): (u, pid) for u in demo_plan.users if is_caregiver(u)
                for pid in u.patient_ids}
    assert expected and set(related) == set(expected)
    for rid, (user, pid) in expected.items():
        r = related[rid]
        assert r["patient"]["reference"] == f"Patient/{pid}" and r["active"] is True
        assert r["name"][0]["text"] == user.display_name
    assert all(len(u.patient_ids) == 1 for u in demo_plan.users if not is_caregiver(u))
    for bad in ("care giver", "x/y", "a" * 70):
        try:
            related_person_id(bad, "pat-001")
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted as part of a FHIR id")


def test_one_radiology_report_per_study_referencing_the_study_by_uid(demo_plan: DemoPlan) -> None:
    resources = clinical_resources(demo_plan)
    reports = [r for r in resources if r["resourceType"] == "DiagnosticReport"]
    studies = demo_plan.studies()
    assert len(reports) == len(studies)
    by_uid = {r["imagingStudy"][0]["identifier"]["value"]: r for r in reports}
    for patient, study in studies:
        report = by_uid[f"urn:oid:{study.study_uid}"]
        assert report["imagingStudy"][0]["identifier"]["system"] == "urn:dicom:uid"
        assert report["subject"]["reference"] == f"Patient/{patient.id}"
        assert report["conclusion"] == study.finding
        assert _when(report["effectiveDateTime"]) == study.started
        assert ("http://loinc.org", "LP29684-5") in _codes(report["category"])
        assert report["identifier"][0]["value"] == study.accession_number
        procedures = [r for r in resources if r["resourceType"] == "Procedure"
                      and r.get("report", [{}])[0].get("reference") == f"DiagnosticReport/{report['id']}"]
        assert len(procedures) == 1 and procedures[0]["code"]["text"] == study.description


def test_abnormal_findings_become_conditions_with_the_report_as_evidence(demo_plan: DemoPlan) -> None:
    resources = clinical_resources(demo_plan)
    conditions = [r for r in resources if r["resourceType"] == "Condition"]
    reports = {r["id"]: r for r in resources if r["resourceType"] == "DiagnosticReport"}
    abnormal = [(p, s) for p, s in demo_plan.studies() if s.finding in FINDING_PROBLEMS]
    assert abnormal, "the default plan has abnormal findings"
    for patient, study in abnormal:
        problem = FINDING_PROBLEMS[study.finding]
        matching = [c for c in conditions if c["subject"]["reference"] == f"Patient/{patient.id}"
                    and ("http://hl7.org/fhir/sid/icd-10-cm", problem.icd10[0]) in _codes(c["code"])]
        assert len(matching) == 1, (patient.id, study.finding)
        evidence = matching[0].get("evidence", [{}])[0].get("detail", [{}])[0].get("reference", "")
        report = reports[evidence.removeprefix("DiagnosticReport/")]
        assert report["conclusion"] in FINDING_PROBLEMS


def test_last_updated_is_spread_before_the_anchor(demo_plan: DemoPlan) -> None:
    stamps = sorted(_when(r["meta"]["lastUpdated"]) for r in clinical_resources(demo_plan))
    assert stamps[-1] <= ANCHOR
    assert (stamps[-1] - stamps[0]).days > 365 * 4
    cutoff = stamps[len(stamps) // 2]
    newer = [s for s in stamps if s > cutoff]
    assert 0 < len(newer) < len(stamps)
