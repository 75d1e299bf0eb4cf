"""``fhirUser`` resolves (SMART App Launch 2.x "fhirUser"): the URL in the id_token and in introspection is a
FHIR resource the access token of the same launch reads, for a patient login (``Patient/{id}``) and for a
caregiver (``RelatedPerson/{username}-{patient}``, the link to the patient picked at launch). Judged by
outside clients: Authlib's OAuth 2.0 client for the launch, joserfc for the id_token, fhirclient and plain
httpx for the read."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from authlib.integrations.requests_client import OAuth2Session as OAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet

from s4s_jupyter.core.pkce import make_verifier
from tests.ehr.conftest import SECRETS, RunningEHR

from .browserless import PageUser

REDIRECT = "http://127.0.0.1:48124/callback"
SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


def launch(ehr: RunningEHR, username: str, password: str, patient: str | None) -> tuple[dict[str, Any], str]:
    """A standalone launch through the real pages; returns the token response and the verified fhirUser."""
    client = OAuth2Client(client_id="s4s-jupyter", redirect_uri=REDIRECT, scope=SCOPE,
                          code_challenge_method="S256", token_endpoint_auth_method="none")
    with client, PageUser(ehr.url) as person:
        verifier = make_verifier()
        url, _ = client.create_authorization_url(ehr.endpoints.authorize, code_verifier=verifier,
                                                 aud=ehr.fhir_base, nonce=make_verifier(8))
        location = person.authorize(url, None, username, password, patient=patient)
        token = dict(client.fetch_token(ehr.endpoints.token, authorization_response=location,
                                        code_verifier=verifier))
    jwks = KeySet.import_key_set(httpx.get(ehr.endpoints.jwks).json())
    claims = jwt.decode(token["id_token"], jwks, algorithms=["RS256"]).claims
    return token, claims["fhirUser"]


def introspected_fhir_user(ehr: RunningEHR, access_token: str) -> Any:
    r = httpx.post(ehr.endpoints.introspect, data={"token": access_token},
                   auth=("s4s-introspection", SECRETS["s4s-introspection"]))
    assert r.status_code == 200 and r.json()["active"] is True
    return r.json()["fhirUser"]


def read_with_fhirclient(ehr: RunningEHR, access_token: str, fhir_user: str) -> Any:
    """fhirclient's R4 model read of ``fhir_user`` (relative to the FHIR base) with the launch's token."""
    from fhirclient import client as fhirclient
    from fhirclient.models.patient import Patient
    from fhirclient.models.relatedperson import RelatedPerson

    smart = fhirclient.FHIRClient(state={
        "app_id": "s4s-jupyter",
        "server": {"base_uri": ehr.fhir_base + "/", "auth_type": "oauth2",
                   "auth": {"app_id": "s4s-jupyter", "access_token": access_token}}})
    assert fhir_user.startswith(ehr.fhir_base + "/")
    path = fhir_user[len(ehr.fhir_base) + 1:]
    model = {"Patient": Patient, "RelatedPerson": RelatedPerson}[path.split("/")[0]]
    return model.read_from(path, smart.server)


def test_patient_login_fhir_user_is_its_patient_and_reads_200(ehr: RunningEHR) -> None:
    user = next(u for u in ehr.plan.users if len(u.patient_ids) == 1)
    pid = user.patient_ids[0]
    token, fhir_user = launch(ehr, user.username, user.password, None)
    assert fhir_user == f"{ehr.fhir_base}/Patient/{pid}" == introspected_fhir_user(ehr, token["access_token"])
    r = httpx.get(fhir_user, headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 200, r.text
    assert (r.json()["resourceType"], r.json()["id"]) == ("Patient", pid)
    assert read_with_fhirclient(ehr, token["access_token"], fhir_user).id == pid


@pytest.mark.parametrize("which", [0, 1])
def test_caregiver_fhir_user_is_the_related_person_of_the_picked_patient(ehr: RunningEHR, which: int) -> None:
    caregiver = next(u for u in ehr.plan.users if len(u.patient_ids) > 1)
    pid = caregiver.patient_ids[which]
    token, fhir_user = launch(ehr, caregiver.username, caregiver.password, pid)
    assert token["patient"] == pid
    assert fhir_user == f"{ehr.fhir_base}/RelatedPerson/{caregiver.username}-{pid}"
    assert introspected_fhir_user(ehr, token["access_token"]) == fhir_user
    r = httpx.get(fhir_user, headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "RelatedPerson" and body["id"] == f"{caregiver.username}-{pid}"
    assert body["patient"]["reference"] == f"Patient/{pid}"
    assert body["name"][0]["text"] == caregiver.display_name
    resource = read_with_fhirclient(ehr, token["access_token"], fhir_user)
    assert resource.patient.reference == f"Patient/{pid}"
    # the other patient's link is not this token's to read
    other = next(p for p in caregiver.patient_ids if p != pid)
    r = httpx.get(f"{ehr.fhir_base}/RelatedPerson/{caregiver.username}-{other}",
                  headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 404
    # a refreshed token keeps the same fhirUser (same patient)
    refreshed = httpx.post(ehr.endpoints.token, data={
        "grant_type": "refresh_token", "client_id": "s4s-jupyter", "refresh_token": token["refresh_token"]})
    assert refreshed.status_code == 200
    assert introspected_fhir_user(ehr, refreshed.json()["access_token"]) == fhir_user
