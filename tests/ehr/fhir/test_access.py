"""Access control of the FHIR API: 401 for bad tokens, 403 for scopes or patients not covered, and never a
byte of another patient's data, whatever the request tries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from servers.demo_data.clinical import MRN_SYSTEM
from servers.demo_data.plan import DemoPlan
from tests.ehr.conftest import RunningEHR
from tests.ehr.fhir.conftest import FHIRClient, mint, validate_r4

Chart = dict[str, list[dict[str, Any]]]


def _secrets_of(plan: DemoPlan, chart: Chart, patient: str) -> list[str]:
    """Strings that only patient ``patient``'s data contains."""
    p = plan.patient(patient)
    return [p.mrn, p.family, f"Patient/{patient}", *(r["id"] for r in chart[patient] if r["id"] != patient)]


def _assert_no_leak(r: httpx.Response, plan: DemoPlan, chart: Chart, patient: str) -> None:
    """Nothing of ``patient``'s data is in the answer, except what the request itself sent (echoed in a
    self link or an error's diagnostics)."""
    sent = unquote(str(r.request.url))
    for secret in _secrets_of(plan, chart, patient):
        if secret not in sent:
            assert secret not in r.text, (secret, r.request.url, r.text[:300])


def _outcome(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = r.json()
    assert body["resourceType"] == "OperationOutcome"
    validate_r4(body)
    return body


# -- 401 -----------------------------------------------------------------------------------------------


def test_missing_malformed_and_unknown_tokens_are_401(ehr: RunningEHR, patient_a: str) -> None:
    url = f"{ehr.fhir_base}/Observation"
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"},
                    {"Authorization": "Bearer not-a-token"}, {"Authorization": "Bearer a b"}):
        r = httpx.get(url, params={"patient": patient_a}, headers=headers)
        _outcome(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_a_request_without_credentials_gets_a_challenge_without_error_code(ehr: RunningEHR,
                                                                           patient_a: str) -> None:
    # RFC 6750 3.1: no error code when the request carried no authentication at all
    r = httpx.get(f"{ehr.fhir_base}/Observation", params={"patient": patient_a})
    _outcome(r, 401)
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer") and "error=" not in challenge


def test_a_forbidden_search_names_insufficient_scope(ehr: RunningEHR, fhir_a: FHIRClient) -> None:
    r = fhir_a.get("Observation", {})
    _outcome(r, 403)
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]


def test_expired_and_revoked_tokens_are_401(ehr: RunningEHR, patient_a: str) -> None:
    expired = mint(ehr, "patient/*.rs", patient_a, lifetime=-1)
    r = FHIRClient(ehr.fhir_base, expired.token).get(f"Patient/{patient_a}")
    _outcome(r, 401)
    live = mint(ehr, "patient/*.rs", patient_a)
    app = FHIRClient(ehr.fhir_base, live.token)
    assert app.get(f"Patient/{patient_a}").status_code == 200
    ehr.services.store.revoke_grant(live.grant_id)
    r = app.get(f"Patient/{patient_a}")
    _outcome(r, 401)
    assert "invalid_token" in r.headers["www-authenticate"]


def test_a_refresh_token_is_not_a_bearer_credential(ehr: RunningEHR, patient_a: str) -> None:
    from tests.ehr.oauth.helpers import tokens

    body = tokens(ehr)
    _outcome(FHIRClient(ehr.fhir_base, body["refresh_token"]).get(f"Patient/{body['patient']}"), 401)


def test_tokens_in_the_query_string_or_body_are_refused_and_never_used(ehr: RunningEHR, fhir_a: FHIRClient,
                                                                       patient_a: str) -> None:
    # alone: refused
    r = httpx.get(f"{ehr.fhir_base}/Patient/{patient_a}", params={"access_token": fhir_a.token})
    _outcome(r, 400)
    # even next to a valid header
    r = fhir_a.get("Observation", {"patient": patient_a, "access_token": fhir_a.token})
    _outcome(r, 400)
    r = fhir_a.post("Observation/_search", data={"patient": patient_a, "access_token": "x"})
    _outcome(r, 400)
    # refused before anything else is looked at
    _outcome(fhir_a.get("Observation", {"access_token": "x"}, Accept="application/xml"), 400)
    _outcome(httpx.get(f"{ehr.fhir_base}/metadata", params={"access_token": "x"}), 400)
    r = httpx.post(f"{ehr.fhir_base}/Observation/_search", data={"patient": patient_a,
                                                                  "access_token": fhir_a.token})
    _outcome(r, 400)


# -- 403 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    {"patient": "{b}"},
    {"patient": "Patient/{b}"},
    {"subject": "Patient/{b}"},
    {"subject:Patient": "{b}"},
    {"patient": "{base}/Patient/{b}"},
    {"patient": "{a},{b}"},
    {"patient": ["{a}", "{b}"]},
    {"patient": "{a}", "subject": "{b}"},
    {"subject": "Group/{a}"},
    {"patient": "https://elsewhere.example/fhir/Patient/{a}"},
    {},
    {"_id": "{b-obs}"},
    {"code": "http://loinc.org|4548-4"},
    {"patient.identifier": "{b-mrn}"},
    {"_has:Condition:patient:_id": "x"},
])
def test_searches_not_for_the_tokens_patient_are_403(fhir_a: FHIRClient, patient_a: str, patient_b: str,
                                                     chart: Chart, small_plan: DemoPlan,
                                                     params: dict[str, Any]) -> None:
    b_obs = next(r["id"] for r in chart[patient_b] if r["resourceType"] == "Observation")
    subs = {"{a}": patient_a, "{b}": patient_b, "{base}": fhir_a.base, "{b-obs}": b_obs,
            "{b-mrn}": f"{MRN_SYSTEM}|{small_plan.patient(patient_b).mrn}"}

    def fill(v: str) -> str:
        for k, s in subs.items():
            v = v.replace(k, s)
        return v

    filled = {k: [fill(x) for x in v] if isinstance(v, list) else fill(v) for k, v in params.items()}
    r = fhir_a.get("Observation", filled)
    _outcome(r, 403)
    _assert_no_leak(r, small_plan, chart, patient_b)


def test_patient_search_for_another_patient_is_403_or_empty(fhir_a: FHIRClient, patient_b: str,
                                                            small_plan: DemoPlan, chart: Chart) -> None:
    _outcome(fhir_a.get("Patient", {"_id": patient_b}), 403)
    mrn_b = small_plan.patient(patient_b).mrn
    for params in ({"identifier": f"{MRN_SYSTEM}|{mrn_b}"}, {"identifier": mrn_b},
                   {"gender": small_plan.patient(patient_b).sex, "identifier": mrn_b}):
        r = fhir_a.get("Patient", params)
        assert r.status_code == 200 and r.json()["total"] == 0, params
        _assert_no_leak(r, small_plan, chart, patient_b)


def test_scopes_must_cover_the_type_and_interaction(client_for: Callable[..., FHIRClient],
                                                    patient_a: str) -> None:
    conditions_only = client_for("launch/patient patient/Condition.rs", patient_a)
    assert conditions_only.get("Condition", {"patient": patient_a}).status_code == 200
    _outcome(conditions_only.get("Observation", {"patient": patient_a}), 403)
    _outcome(conditions_only.get(f"Patient/{patient_a}"), 403)
    read_no_search = client_for("patient/Observation.r", patient_a)
    _outcome(read_no_search.get("Observation", {"patient": patient_a}), 403)
    write_only = client_for("patient/*.cud", patient_a)
    _outcome(write_only.get("Condition", {"patient": patient_a}), 403)
    identity_only = client_for("openid fhirUser launch/patient", patient_a)
    _outcome(identity_only.get(f"Patient/{patient_a}"), 403)


def test_patient_scopes_without_a_patient_in_the_token_are_403(client_for: Callable[..., FHIRClient],
                                                               patient_a: str) -> None:
    no_patient = client_for("patient/*.rs", None)
    _outcome(no_patient.get("Condition", {"patient": patient_a}), 403)
    _outcome(no_patient.get(f"Patient/{patient_a}"), 403)


# -- reads of another patient's resources are 404, like absent ones -------------------------------------


def test_reading_another_patients_resources_is_404(fhir_a: FHIRClient, patient_b: str, chart: Chart,
                                                   small_plan: DemoPlan) -> None:
    for resource in chart[patient_b]:
        r = fhir_a.get(f"{resource['resourceType']}/{resource['id']}")
        _outcome(r, 404)
        _assert_no_leak(r, small_plan, chart, patient_b)
    absent = fhir_a.get("Observation/no-such-id")
    assert _outcome(absent, 404)["issue"][0]["code"] == "not-found"


def test_search_tricks_inside_the_own_compartment_never_reach_another_patient(
        fhir_a: FHIRClient, patient_a: str, patient_b: str, chart: Chart, small_plan: DemoPlan) -> None:
    b_ids = [r["id"] for r in chart[patient_b] if r["resourceType"] == "Observation"][:20]
    for params in ({"patient": patient_a, "_id": ",".join(b_ids)},
                   {"patient": patient_a, "_include": "Observation:patient"},
                   {"patient": patient_a, "_revinclude": "Provenance:target"},
                   {"patient": patient_a, "patient.identifier": small_plan.patient(patient_b).mrn},
                   {"patient": patient_a, "_offset": "0", "_count": "500"}):
        r = fhir_a.get("Observation", params)
        assert r.status_code == 200, (params, r.text)
        _assert_no_leak(r, small_plan, chart, patient_b)
        if "_id" in params:
            assert r.json()["total"] == 0
    # a next link edited to another patient is checked again like any request
    first = fhir_a.get("Observation", {"patient": patient_a, "_count": "2"}).json()
    link = next(lk["url"] for lk in first["link"] if lk["relation"] == "next")
    _outcome(fhir_a.get(link.replace(f"patient={patient_a}", f"patient={patient_b}")), 403)
    # path tricks
    for path in (f"Observation/..%2FPatient%2F{patient_b}", f"Patient/{patient_b}/_history",
                 f"Patient/{patient_b}/$everything", f"Patient/{patient_b}%00"):
        r = fhir_a.get(path)
        assert r.status_code in (400, 404), (path, r.status_code)
        _assert_no_leak(r, small_plan, chart, patient_b)


# -- v2 scopes with a query, v1 scopes, user/ and system/ ------------------------------------------------


def test_a_v2_scope_with_a_category_restriction_filters_the_answer(
        client_for: Callable[..., FHIRClient], patient_a: str, chart: Chart) -> None:
    labs_only = client_for(
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        patient_a)
    everything = labs_only.search_all("Observation", {"patient": patient_a})
    assert everything and all(o["category"][0]["coding"][0]["code"] == "laboratory" for o in everything)
    vitals = labs_only.get("Observation", {"patient": patient_a, "category": "vital-signs"})
    assert vitals.json()["total"] == 0
    vital = next(r for r in chart[patient_a] if r["resourceType"] == "Observation"
                 and r["category"][0]["coding"][0]["code"] == "vital-signs")
    _outcome(labs_only.get(f"Observation/{vital['id']}"), 404)
    lab = everything[0]
    assert labs_only.get(f"Observation/{lab['id']}").status_code == 200
    # two restricted scopes: the union
    both = client_for("patient/Observation.rs?category=laboratory "
                      "patient/Observation.rs?category=vital-signs", patient_a)
    got = both.search_all("Observation", {"patient": patient_a})
    cats = {o["category"][0]["coding"][0]["code"] for o in got}
    assert cats == {"laboratory", "vital-signs"}
    # a restriction on a parameter this server does not know grants nothing (fail closed)
    odd = client_for("patient/Observation.rs?unknown-param=x", patient_a)
    assert odd.get("Observation", {"patient": patient_a}).json()["total"] == 0


def test_v1_scopes(client_for: Callable[..., FHIRClient], patient_a: str) -> None:
    v1 = client_for("launch/patient patient/*.read", patient_a)
    assert v1.get("Immunization", {"patient": patient_a}).json()["total"] > 0
    assert v1.get(f"Patient/{patient_a}").status_code == 200


def test_user_scopes_are_bound_to_the_tokens_patient(client_for: Callable[..., FHIRClient], patient_a: str,
                                                     patient_b: str) -> None:
    user = client_for("openid fhirUser user/*.rs", patient_a)
    assert user.get("Condition", {"patient": patient_a}).status_code == 200
    _outcome(user.get("Condition", {"patient": patient_b}), 403)
    _outcome(client_for("user/*.rs", None).get("Condition", {"patient": patient_a}), 403)


def test_system_scopes_reach_every_patient(client_for: Callable[..., FHIRClient], small_plan: DemoPlan,
                                           chart: Chart) -> None:
    backend = client_for("system/Patient.rs system/Observation.rs", None, client_id="s4s-broker")
    everyone = backend.search_all("Patient")
    assert {p["id"] for p in everyone} == {p.id for p in small_plan.patients}
    mrn = small_plan.patients[2].mrn
    found = backend.get("Patient", {"identifier": f"{MRN_SYSTEM}|{mrn}"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [small_plan.patients[2].id]
    all_obs = backend.get("Observation", {"_count": "0"}).json()["total"]
    assert all_obs == sum(1 for rs in chart.values() for r in rs if r["resourceType"] == "Observation")
    _outcome(backend.get("Condition"), 403)
