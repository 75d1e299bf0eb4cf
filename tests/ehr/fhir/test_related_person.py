"""RelatedPerson (a caregiver's SMART ``fhirUser``) through the FHIR API: read and search by ``patient`` and
``_id``, inside the token's patient compartment only (R4 RelatedPerson is in the Patient compartment through
``RelatedPerson.patient``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from servers.demo_data.clinical import V3_ROLE_CODE, related_person_id
from servers.demo_data.plan import DemoPlan
from tests.ehr.fhir.conftest import FHIRClient, validate_r4

Chart = dict[str, list[dict[str, Any]]]


def _caregiver(plan: DemoPlan) -> str:
    return next(u.username for u in plan.users if len(u.patient_ids) > 1)


def _ids(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    validate_r4(r.json())
    return [e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


def test_search_and_read_within_the_tokens_patient(fhir_a: FHIRClient, patient_a: str, patient_b: str,
                                                   small_plan: DemoPlan, chart: Chart) -> None:
    mine, theirs = (related_person_id(_caregiver(small_plan), p) for p in (patient_a, patient_b))
    expected = next(r for r in chart[patient_a] if r["resourceType"] == "RelatedPerson")
    assert expected["id"] == mine
    assert _ids(fhir_a.get("RelatedPerson", {"patient": patient_a})) == [mine]
    assert _ids(fhir_a.get("RelatedPerson", {"patient": f"Patient/{patient_a}", "_id": mine})) == [mine]
    assert _ids(fhir_a.get("RelatedPerson", {"patient": patient_a, "_id": theirs})) == []
    assert _ids(fhir_a.get("RelatedPerson", {"patient": patient_a,
                                             "relationship": f"{V3_ROLE_CODE}|HPOWATT"})) == [mine]
    assert _ids(fhir_a.get("RelatedPerson", {"patient": patient_a, "relationship": "GUARD"})) == []
    read = fhir_a.get(f"RelatedPerson/{mine}")
    assert read.status_code == 200 and read.json() == expected
    validate_r4(read.json())
    # another patient's RelatedPerson: 404 to a read, 403 to a search naming that patient
    other = fhir_a.get(f"RelatedPerson/{theirs}")
    assert other.status_code == 404 and other.json()["resourceType"] == "OperationOutcome"
    assert small_plan.patient(patient_b).family not in other.text
    assert fhir_a.get("RelatedPerson", {"patient": patient_b}).status_code == 403
    assert fhir_a.get("RelatedPerson", {"_id": theirs}).status_code == 403  # a search must name the patient


def test_a_patient_without_caregiver_has_none(client_for: Callable[..., FHIRClient],
                                              small_plan: DemoPlan) -> None:
    alone = next(p.id for p in small_plan.patients
                 if not any(len(u.patient_ids) > 1 and p.id in u.patient_ids for u in small_plan.users))
    assert _ids(client_for("patient/*.rs", alone).get("RelatedPerson", {"patient": alone})) == []


def test_system_token_searches_by_id_across_patients(client_for: Callable[..., FHIRClient],
                                                     small_plan: DemoPlan) -> None:
    backend = client_for("system/RelatedPerson.rs", None, client_id="s4s-broker")
    caregiver = next(u for u in small_plan.users if len(u.patient_ids) > 1)
    wanted = [related_person_id(caregiver.username, p) for p in caregiver.patient_ids]
    assert sorted(_ids(backend.get("RelatedPerson", {"_id": ",".join(wanted)}))) == sorted(wanted)
    assert len(_ids(backend.get("RelatedPerson"))) == len(wanted)
    # scopes still decide the type: a token for Observation only reads no RelatedPerson
    obs_only = client_for("launch/patient patient/Observation.rs", caregiver.patient_ids[0])
    assert obs_only.get(f"RelatedPerson/{wanted[0]}").status_code == 403
