"""The FHIR API's HTTP surface: CapabilityStatement, JSON-only negotiation, OperationOutcome for errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.ehr.conftest import RunningEHR
from tests.ehr.fhir.conftest import FHIRClient, validate_r4

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def _outcome(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    validate_r4(body)
    return str(body["issue"][0]["code"])


def test_capability_statement_without_a_token(ehr: RunningEHR) -> None:
    r = httpx.get(f"{ehr.fhir_base}/metadata")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    cs = r.json()
    validate_r4(cs)
    assert cs["fhirVersion"] == "4.0.1" and cs["kind"] == "instance"
    rest = cs["rest"][0]
    ext = next(e for e in rest["security"]["extension"] if e["url"] == OAUTH_URIS)
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert uris == {"authorize": ehr.endpoints.authorize, "token": ehr.endpoints.token,
                    "introspect": ehr.endpoints.introspect, "revoke": ehr.endpoints.revoke}
    assert rest["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    by_type = {res["type"]: res for res in rest["resource"]}
    assert set(by_type) == {"Patient", "AllergyIntolerance", "Condition", "MedicationRequest",
                            "MedicationStatement", "Observation", "Procedure", "Immunization",
                            "DocumentReference", "DiagnosticReport", "RelatedPerson"}
    obs_params = {p["name"] for p in by_type["Observation"]["searchParam"]}
    assert {"patient", "subject", "category", "code", "date", "_lastUpdated", "_id"} <= obs_params
    assert "identifier" in {p["name"] for p in by_type["Patient"]["searchParam"]}
    # the SMART configuration next to it is the authorization server's, not swallowed by the FHIR routes
    assert httpx.get(f"{ehr.fhir_base}/.well-known/smart-configuration").status_code == 200


@pytest.mark.parametrize("accept", [None, "*/*", "application/fhir+json", "application/json",
                                    "application/fhir+json; fhirVersion=4.0", "text/html, */*;q=0.8",
                                    "application/*"])
def test_json_is_served_for_acceptable_accept_headers(fhir_a: FHIRClient, patient_a: str,
                                                      accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    assert fhir_a.get(f"Patient/{patient_a}", **headers).status_code == 200


@pytest.mark.parametrize("accept", ["application/fhir+xml", "application/xml", "text/html",
                                    "application/fhir+json;q=0, application/xml"])
def test_non_json_accept_is_406(fhir_a: FHIRClient, patient_a: str, ehr: RunningEHR, accept: str) -> None:
    assert _outcome(fhir_a.get(f"Patient/{patient_a}", Accept=accept), 406) == "not-supported"
    _outcome(fhir_a.get("Observation", {"patient": patient_a}, Accept=accept), 406)
    _outcome(httpx.get(f"{ehr.fhir_base}/metadata", headers={"Accept": accept}), 406)


def test_format_parameter(fhir_a: FHIRClient, patient_a: str) -> None:
    for fmt in ("json", "application/json", "application/fhir+json"):
        assert fhir_a.get(f"Patient/{patient_a}", {"_format": fmt}).status_code == 200
    for fmt in ("xml", "application/fhir+xml", "html"):
        _outcome(fhir_a.get(f"Patient/{patient_a}", {"_format": fmt}), 406)
    # _format wins over Accept (R4 3.1.0.1.10)
    r = fhir_a.get(f"Patient/{patient_a}", {"_format": "json"}, Accept="application/xml")
    assert r.status_code == 200


def test_bodies_of_the_wrong_type_are_415_and_writes_405(fhir_a: FHIRClient, patient_a: str) -> None:
    r = fhir_a.post("Observation/_search", content=b'{"patient": "x"}',
                    headers={"Content-Type": "application/json"})
    _outcome(r, 415)
    _outcome(fhir_a.post("Observation", content=b"<Observation/>",
                         headers={"Content-Type": "application/fhir+xml"}), 415)
    _outcome(fhir_a.post("Observation", content=b'{"resourceType": "Observation"}',
                         headers={"Content-Type": "application/fhir+json"}), 405)
    auth = {"Authorization": f"Bearer {fhir_a.token}"}
    r = httpx.put(f"{fhir_a.base}/Patient/{patient_a}", content=b'{"resourceType": "Patient"}',
                  headers={**auth, "Content-Type": "application/fhir+json"})
    _outcome(r, 405)
    r = httpx.delete(f"{fhir_a.base}/Patient/{patient_a}", headers=auth)
    _outcome(r, 405)
    assert fhir_a.get(f"Patient/{patient_a}").status_code == 200  # nothing changed


def test_unknown_types_and_paths_are_404(fhir_a: FHIRClient, patient_a: str) -> None:
    assert _outcome(fhir_a.get("Encounter", {"patient": patient_a}), 404) == "not-found"
    _outcome(fhir_a.get("Basic/x"), 404)
    _outcome(fhir_a.get("observation", {"patient": patient_a}), 404)
    _outcome(fhir_a.get(f"Patient/{patient_a}/_history/1"), 404)


@pytest.mark.parametrize("params", [
    {"date": "2024-13-01"}, {"date": "yesterday"}, {"date": "sa2024"}, {"_lastUpdated": "gt2024-01-01T10"},
    {"code:text": "hemoglobin"}, {"code": "a|b|c"}, {"_count": "ten"}, {"_count": "-1"},
    {"_count": ["5", "6"]}, {"_offset": "-3"}, {"_id": "bad id!"}, {"patient": "Patient/a/b/c"},
    {"category": "|"}, {"_offset": "99999999999999999999"}, {"code": ",".join(["x"] * 101)},
    {"date": ["ge2020"] * 51},
])
def test_malformed_values_are_400(fhir_a: FHIRClient, patient_a: str, params: dict[str, Any]) -> None:
    r = fhir_a.get("Observation", {"patient": patient_a, **params})
    assert _outcome(r, 400) in ("invalid", "not-supported")


def test_malformed_id_is_400(fhir_a: FHIRClient) -> None:
    _outcome(fhir_a.get("Observation/" + "x" * 65), 400)


def test_answers_with_patient_data_are_not_cached(fhir_a: FHIRClient, patient_a: str) -> None:
    assert fhir_a.get(f"Patient/{patient_a}").headers["cache-control"] == "no-store"
    assert fhir_a.get("Condition", {"patient": patient_a}).headers["cache-control"] == "no-store"
