"""``.well-known/smart-configuration`` and the JWK Set (SMART App Launch 2.x "Conformance")."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from joserfc.jwk import KeySet

from servers.ehr.settings import AssociatedEndpoint
from tests.ehr.conftest import RunningEHR

REQUIRED_CAPABILITIES = {"launch-standalone", "client-public", "client-confidential-symmetric",
                         "context-standalone-patient", "permission-patient", "permission-offline",
                         "permission-v1", "permission-v2", "sso-openid-connect"}


def test_smart_configuration_lists_endpoints_and_capabilities(ehr: RunningEHR) -> None:
    for base in (ehr.fhir_base, ehr.url):
        url = f"{base}/.well-known/smart-configuration"
        r = httpx.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert r.headers["access-control-allow-origin"] == "*"
        doc = r.json()
        assert doc["issuer"] == ehr.fhir_base
        assert doc["authorization_endpoint"] == ehr.url + "/auth/authorize"
        assert doc["token_endpoint"] == ehr.url + "/auth/token"
        assert doc["introspection_endpoint"] == ehr.url + "/auth/introspect"
        assert doc["revocation_endpoint"] == ehr.url + "/auth/revoke"
        assert doc["jwks_uri"] == ehr.url + "/auth/jwks"
        assert doc["code_challenge_methods_supported"] == ["S256"]
        assert doc["response_types_supported"] == ["code"]
        grants = {"authorization_code", "refresh_token", "client_credentials"}
        assert set(doc["grant_types_supported"]) == grants
        assert set(doc["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "none"}
        assert set(doc["capabilities"]) >= REQUIRED_CAPABILITIES
        assert {"openid", "fhirUser", "launch/patient", "offline_access", "patient/*.rs"} <= set(
            doc["scopes_supported"])
        assert doc["associated_endpoints"] == []


def test_associated_endpoints_name_the_imaging_broker(start_ehr: Callable[..., RunningEHR]) -> None:
    broker = "http://127.0.0.1:9/fhir"
    ehr = start_ehr(associated_endpoints=(AssociatedEndpoint(broker),))
    doc = httpx.get(ehr.endpoints.smart_configuration).json()
    assert doc["associated_endpoints"] == [{"url": broker, "capabilities": ["smart-imaging-access"]}]


def test_openid_configuration_sits_at_the_issuer(ehr: RunningEHR) -> None:
    issuer = httpx.get(ehr.endpoints.smart_configuration).json()["issuer"]
    doc = httpx.get(issuer + "/.well-known/openid-configuration").json()
    assert doc["issuer"] == issuer and doc["jwks_uri"] == ehr.endpoints.jwks
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]


def test_jwks_publishes_only_the_public_signing_key(ehr: RunningEHR) -> None:
    r = httpx.get(ehr.endpoints.jwks)
    assert r.status_code == 200
    keys = r.json()["keys"]
    assert len(keys) == 1
    assert (keys[0]["kty"], keys[0]["alg"], keys[0]["use"]) == ("RSA", "RS256", "sig")
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(keys[0])
    KeySet.import_key_set(r.json())  # a valid JWK Set for an outside JOSE library


def test_capability_statement_carries_the_smart_oauth_uris(ehr: RunningEHR) -> None:
    r = httpx.get(ehr.fhir_base + "/metadata")
    assert r.status_code == 200
    security = r.json()["rest"][0]["security"]
    uris = next(e for e in security["extension"]
                if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris")
    got = {e["url"]: e["valueUri"] for e in uris["extension"]}
    assert got["authorize"] == ehr.endpoints.authorize and got["token"] == ehr.endpoints.token
