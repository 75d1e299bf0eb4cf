"""The standalone launch end to end, judged by outside SMART/OAuth client libraries we did not write:
Authlib's OAuth2 client (requests) and fhirclient, with joserfc verifying the id_token against the JWKS."""

from __future__ import annotations

import httpx
import pytest
from authlib.integrations.base_client import OAuthError as ClientOAuthError
from authlib.integrations.requests_client import OAuth2Session as OAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet

from s4s_jupyter.core.pkce import make_verifier
from tests.ehr.conftest import SECRETS, RunningEHR

from .browserless import PageUser, callback_params

REDIRECT = "http://127.0.0.1:48123/callback"
SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


def introspect(ehr: RunningEHR, token: str) -> dict[str, object]:
    r = httpx.post(ehr.endpoints.introspect, data={"token": token},
                   auth=("s4s-introspection", SECRETS["s4s-introspection"]))
    assert r.status_code == 200
    body: dict[str, object] = r.json()
    return body


def kit_client(ehr: RunningEHR, scope: str = SCOPE) -> OAuth2Client:
    return OAuth2Client(client_id="s4s-jupyter", redirect_uri=REDIRECT, scope=scope,
                        code_challenge_method="S256", token_endpoint_auth_method="none")


def test_authlib_client_completes_launch_refreshes_and_is_refused_after_revocation(ehr: RunningEHR) -> None:
    caregiver = next(u for u in ehr.plan.users if len(u.patient_ids) > 1)
    patient = caregiver.patient_ids[1]
    config = httpx.get(ehr.endpoints.smart_configuration).json()
    with kit_client(ehr) as client, PageUser(ehr.url) as person:
        verifier = make_verifier()
        nonce = make_verifier(8)
        url, state = client.create_authorization_url(config["authorization_endpoint"], code_verifier=verifier,
                                                     aud=ehr.fhir_base, nonce=nonce)
        location = person.authorize(url, None, caregiver.username, caregiver.password, patient=patient)
        assert callback_params(location)["state"] == state
        token = client.fetch_token(config["token_endpoint"], authorization_response=location,
                                   code_verifier=verifier)
        assert token["token_type"] == "Bearer" and 0 < token["expires_in"] <= 3600
        assert token["patient"] == patient
        assert set(token["scope"].split()) == set(SCOPE.split())
        assert token["refresh_token"] and token["id_token"]

        # the id_token verifies with the published key (joserfc) and carries the OIDC/SMART claims
        jwks = KeySet.import_key_set(httpx.get(config["jwks_uri"]).json())
        claims = jwt.decode(token["id_token"], jwks, algorithms=["RS256"]).claims
        assert claims["iss"] == config["issuer"] == ehr.fhir_base
        assert claims["aud"] == "s4s-jupyter" and claims["sub"] == caregiver.username
        assert claims["nonce"] == nonce
        assert claims["fhirUser"] == f"{ehr.fhir_base}/RelatedPerson/{caregiver.username}-{patient}"

        info = introspect(ehr, token["access_token"])
        assert info["active"] is True and info["patient"] == patient and info["client_id"] == "s4s-jupyter"
        assert info["sub"] == caregiver.username and info["iss"] == ehr.fhir_base

        # refresh: a new access token and a rotated refresh token, same patient and scope
        old_access, old_refresh = token["access_token"], token["refresh_token"]
        refreshed = client.refresh_token(config["token_endpoint"])
        assert refreshed["access_token"] != old_access and refreshed["refresh_token"] != old_refresh
        assert refreshed["patient"] == patient
        assert introspect(ehr, refreshed["access_token"])["active"] is True

        # revocation (RFC 7009) by the public client ends the grant: tokens inactive, refresh refused
        r = client.revoke_token(config["revocation_endpoint"], token=refreshed["refresh_token"],
                                token_type_hint="refresh_token")
        assert r.status_code == 200
        assert introspect(ehr, refreshed["access_token"]) == {"active": False}
        assert ehr.services.introspector.introspect(refreshed["access_token"]).active is False
        with pytest.raises(ClientOAuthError) as err:
            client.refresh_token(config["token_endpoint"], refresh_token=refreshed["refresh_token"])
        assert err.value.error == "invalid_grant"


def test_single_patient_user_skips_the_picker_and_unticked_scopes_narrow_the_grant(ehr: RunningEHR) -> None:
    user = next(u for u in ehr.plan.users if len(u.patient_ids) == 1)
    with kit_client(ehr) as client, PageUser(ehr.url) as person:
        verifier = make_verifier()
        url, _ = client.create_authorization_url(ehr.endpoints.authorize, code_verifier=verifier,
                                                 aud=ehr.fhir_base)
        person.open(url)
        page = person.login(user.username, user.password)
        assert page.request.url.path == "/auth/consent"  # no picker for a one-patient login
        assert person.consent_scopes() == SCOPE.split()
        location = person.decide(scopes=["launch/patient", "patient/*.rs"]).headers["location"]
        token = client.fetch_token(ehr.endpoints.token, authorization_response=location,
                                   code_verifier=verifier)
    assert token["scope"] == "launch/patient patient/*.rs"
    assert token["patient"] == user.patient_ids[0]
    assert "refresh_token" not in token and "id_token" not in token  # offline_access, openid unticked
    info = introspect(ehr, token["access_token"])
    assert info["scope"] == "launch/patient patient/*.rs" and "sub" not in info


def test_deny_redirects_with_access_denied_and_state(ehr: RunningEHR) -> None:
    user = ehr.plan.users[-1]
    with kit_client(ehr) as client, PageUser(ehr.url) as person:
        url, state = client.create_authorization_url(ehr.endpoints.authorize, code_verifier=make_verifier(),
                                                     aud=ehr.fhir_base)
        location = person.authorize(url, None, user.username, user.password, approve=False)
    params = callback_params(location)
    assert location.startswith(REDIRECT)
    assert params["error"] == "access_denied" and params["state"] == state and "code" not in params


def test_confidential_client_uses_client_secret_basic(ehr: RunningEHR) -> None:
    user = ehr.plan.users[-1]
    redirect = "https://app.example.org/callback"
    client = OAuth2Client(client_id="web-app", client_secret=SECRETS["web-app"], redirect_uri=redirect,
                          scope="launch/patient offline_access patient/*.rs", code_challenge_method="S256",
                          token_endpoint_auth_method="client_secret_basic")
    with client, PageUser(ehr.url) as person:
        verifier = make_verifier()
        url, _ = client.create_authorization_url(ehr.endpoints.authorize, code_verifier=verifier,
                                                 aud=ehr.fhir_base)
        location = person.authorize(url, None, user.username, user.password)
        assert location.startswith(redirect + "?")
        token = client.fetch_token(ehr.endpoints.token, authorization_response=location,
                                   code_verifier=verifier)
        assert token["patient"] == user.patient_ids[0]
        refreshed = client.refresh_token(ehr.endpoints.token)
        assert refreshed["access_token"] != token["access_token"]


def test_fhirclient_discovers_launches_reads_refreshes_and_is_refused_after_revocation(
        ehr: RunningEHR) -> None:
    """fhirclient (SMART on FHIR's Python client) discovers the OAuth endpoints from the FHIR API's
    CapabilityStatement, builds the authorize URL with PKCE S256, exchanges the code, reads the patient,
    refreshes, and is refused once the grant is revoked."""
    from fhirclient import client as fhirclient
    from fhirclient.models.allergyintolerance import AllergyIntolerance
    from fhirclient.models.condition import Condition
    from fhirclient.models.diagnosticreport import DiagnosticReport
    from fhirclient.models.documentreference import DocumentReference
    from fhirclient.models.immunization import Immunization
    from fhirclient.models.medicationrequest import MedicationRequest
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient
    from fhirclient.models.procedure import Procedure
    from fhirclient.server import FHIRPermissionDeniedException, FHIRUnauthorizedException

    caregiver = next(u for u in ehr.plan.users if len(u.patient_ids) > 1)
    pid = caregiver.patient_ids[1]
    smart = fhirclient.FHIRClient(settings={"app_id": "s4s-jupyter", "api_base": ehr.fhir_base + "/",
                                            "redirect_uri": REDIRECT, "scope": SCOPE})
    authorize_url = smart.authorize_url  # reads /fhir/metadata
    assert authorize_url.startswith(ehr.endpoints.authorize + "?")
    assert "code_challenge_method=S256" in authorize_url
    with PageUser(ehr.url) as person:
        location = person.authorize(authorize_url, None, caregiver.username, caregiver.password, patient=pid)
    smart.handle_callback(location)
    assert smart.ready and smart.patient_id == pid
    assert Patient.read(pid, smart.server).id == pid
    # the Sync for Science searches, through fhirclient's R4 models
    searches = [(AllergyIntolerance, {}), (Condition, {}), (MedicationRequest, {}), (Procedure, {}),
                (Immunization, {}), (DocumentReference, {}), (DiagnosticReport, {}),
                (Observation, {"category": "laboratory"}), (Observation, {"category": "vital-signs"}),
                (Observation, {"code": "http://loinc.org|72166-2"})]
    found = 0
    for model, extra in searches:
        for resource in model.where({"patient": pid, **extra}).perform_resources_iter(smart.server):
            subject = getattr(resource, "subject", None) or getattr(resource, "patient", None)
            assert subject is not None and subject.reference.endswith(f"Patient/{pid}")
            found += 1
    assert found > 0
    other = next(p.id for p in ehr.plan.patients if p.id != pid)
    with pytest.raises(FHIRPermissionDeniedException):
        list(Condition.where({"patient": other}).perform_resources_iter(smart.server))

    first = smart.server.auth.access_token
    smart.reauthorize()
    renewed = smart.server.auth.access_token
    assert renewed != first
    assert introspect(ehr, first)["active"] is True  # rotation leaves the old access token to expire
    assert Patient.read(pid, smart.server).id == pid

    r = httpx.post(ehr.endpoints.revoke, data={"token": smart.server.auth.refresh_token,
                                               "client_id": "s4s-jupyter"})
    assert r.status_code == 200
    for token in (first, renewed):
        assert introspect(ehr, token) == {"active": False}
    with pytest.raises(FHIRUnauthorizedException):
        Patient.read(pid, smart.server)
