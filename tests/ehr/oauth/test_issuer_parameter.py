"""RFC 9207: every authorization response that reaches the client (a code, an error redirect, a denial, an
auto-approved demo launch) carries ``iss`` = the issuer of the SMART configuration, exactly once; the
metadata says so (``authorization_response_iss_parameter_supported``). Error pages (no verified redirect
URI) redirect nowhere. A client that compares ``iss`` with the issuer it started with detects a mix-up
(RFC 9700 4.4.2), which the last test does with two EHRs."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.ehr.conftest import RunningEHR

from .browserless import PageUser, launch_params
from .helpers import authorize_raw, exchange, user_with_one_patient

REDIRECT = "http://127.0.0.1:8765/callback"


def issuer_of(ehr: RunningEHR) -> str:
    issuer: str = httpx.get(ehr.endpoints.smart_configuration).json()["issuer"]
    return issuer


def response_params(location: str) -> dict[str, list[str]]:
    assert location.startswith(REDIRECT + "?"), location
    return parse_qs(urlsplit(location).query)


def test_metadata_advertises_the_iss_parameter(ehr: RunningEHR) -> None:
    for url in (ehr.endpoints.smart_configuration, f"{ehr.fhir_base}/.well-known/openid-configuration"):
        doc = httpx.get(url).json()
        assert doc["authorization_response_iss_parameter_supported"] is True, url
        assert doc["issuer"] == ehr.fhir_base


def test_code_response_carries_iss(ehr: RunningEHR) -> None:
    params, verifier = launch_params(ehr.url, redirect_uri=REDIRECT)
    user = user_with_one_patient(ehr)
    with PageUser(ehr.url) as person:
        location = person.authorize("/auth/authorize", params, user.username, user.password)
    got = response_params(location)
    assert got["iss"] == [issuer_of(ehr)] and got["state"] == [params["state"]]
    assert exchange(ehr, got["code"][0], verifier, params).status_code == 200


def test_denial_carries_iss(ehr: RunningEHR) -> None:
    params, _ = launch_params(ehr.url, redirect_uri=REDIRECT)
    user = user_with_one_patient(ehr)
    with PageUser(ehr.url) as person:
        location = person.authorize("/auth/authorize", params, user.username, user.password, approve=False)
    got = response_params(location)
    assert got["error"] == ["access_denied"] and got["iss"] == [issuer_of(ehr)] and "code" not in got


@pytest.mark.parametrize("overrides", [{"scope": "patient/*.cruds"}, {"code_challenge_method": "plain"},
                                       {"aud": "http://evil.example/fhir"}, {"response_type": "token"},
                                       {"state": None}])
def test_error_redirects_carry_iss(ehr: RunningEHR, overrides: dict[str, str | None]) -> None:
    params, _ = launch_params(ehr.url, redirect_uri=REDIRECT, **overrides)
    r = authorize_raw(ehr, params)
    assert r.status_code == 302, r.text
    got = response_params(r.headers["location"])
    assert got["error"] and got["iss"] == [issuer_of(ehr)]


def test_error_page_redirects_nowhere(ehr: RunningEHR) -> None:
    params, _ = launch_params(ehr.url, redirect_uri="http://evil.example/callback")
    r = authorize_raw(ehr, params)
    assert r.status_code == 400 and "location" not in r.headers


def test_auto_approved_launch_carries_iss_and_clients_can_tell_ehrs_apart(
        start_ehr: Callable[..., RunningEHR], ehr: RunningEHR) -> None:
    auto = start_ehr(auto_approve=True)
    params, verifier = launch_params(auto.url, redirect_uri=REDIRECT)
    r = authorize_raw(auto, params)
    assert r.status_code == 302
    got = response_params(r.headers["location"])
    assert got["iss"] == [issuer_of(auto)] != [issuer_of(ehr)]
    # mix-up (RFC 9700 4.4): a response whose iss is not the server the client sent the user to is
    # rejected by the client; and a code of one EHR is worthless at the other's token endpoint
    assert got["iss"][0] != ehr.fhir_base
    r = exchange(ehr, got["code"][0], verifier, {**params, "client_id": "s4s-jupyter"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert exchange(auto, got["code"][0], verifier, params).status_code == 200
