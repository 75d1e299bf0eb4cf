"""Token, refresh, introspection and revocation endpoints under attack (RFC 6749 5.2 and 10, RFC 7009,
RFC 7662, RFC 9700 2.2 and 4.14, SMART App Launch)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.ehr.conftest import SECRETS, RunningEHR

from .helpers import active, exchange, get_code, refresh, tokens


@pytest.fixture(scope="module")
def clock_ehr(start_ehr: Callable[..., RunningEHR]) -> RunningEHR:
    """An EHR of its own, whose clock the tests move."""
    return start_ehr()


def test_token_response_is_not_cacheable(ehr: RunningEHR) -> None:
    code, verifier, params = get_code(ehr)
    r = exchange(ehr, code, verifier, params)
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache"
    assert r.headers["content-type"].startswith("application/json")


def test_replayed_code_is_refused_and_revokes_what_it_issued(ehr: RunningEHR) -> None:
    code, verifier, params = get_code(ehr)
    first = exchange(ehr, code, verifier, params).json()
    assert active(ehr, first["access_token"])
    second = exchange(ehr, code, verifier, params)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    assert not active(ehr, first["access_token"])
    assert refresh(ehr, first["refresh_token"]).json()["error"] == "invalid_grant"


def test_expired_code_is_refused(clock_ehr: RunningEHR) -> None:
    code, verifier, params = get_code(clock_ehr)
    clock_ehr.clock.advance(clock_ehr.settings.code_lifetime + 1)
    r = exchange(clock_ehr, code, verifier, params)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_expired_access_and_refresh_tokens(clock_ehr: RunningEHR) -> None:
    issued = tokens(clock_ehr)
    assert issued["expires_in"] <= 3600
    clock_ehr.clock.advance(issued["expires_in"] + 1)
    assert not active(clock_ehr, issued["access_token"])
    assert clock_ehr.services.introspector.introspect(issued["access_token"]).active is False
    renewed = refresh(clock_ehr, issued["refresh_token"])  # the refresh token lives on
    assert renewed.status_code == 200 and active(clock_ehr, renewed.json()["access_token"])
    clock_ehr.clock.advance(clock_ehr.settings.refresh_token_lifetime + 1)
    assert refresh(clock_ehr, renewed.json()["refresh_token"]).json()["error"] == "invalid_grant"


def test_refresh_token_reuse_revokes_the_whole_family(ehr: RunningEHR) -> None:
    issued = tokens(ehr)
    r1 = refresh(ehr, issued["refresh_token"]).json()
    r2 = refresh(ehr, r1["refresh_token"]).json()
    assert active(ehr, r2["access_token"])
    reused = refresh(ehr, issued["refresh_token"])  # an attacker replays the first refresh token
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    for access in (issued["access_token"], r1["access_token"], r2["access_token"]):
        assert not active(ehr, access)
    assert refresh(ehr, r2["refresh_token"]).json()["error"] == "invalid_grant"


def test_refresh_may_narrow_but_never_widen_scope(ehr: RunningEHR) -> None:
    issued = tokens(ehr, scope="launch/patient offline_access patient/*.rs")
    for wider in ("launch/patient offline_access patient/*.rs user/*.rs", "patient/*.cruds",
                  "patient/*.rs openid", "patient/*.*", "not-a-scope"):
        r = refresh(ehr, issued["refresh_token"], scope=wider)
        assert r.status_code == 400 and r.json()["error"] == "invalid_scope", wider
    narrow = refresh(ehr, issued["refresh_token"], scope="offline_access patient/Observation.rs")
    assert narrow.status_code == 200
    body = narrow.json()
    assert body["scope"] == "offline_access patient/Observation.rs" and "patient" not in body
    # v1 spelling of what was granted in v2 is covered too
    again = refresh(ehr, body["refresh_token"], scope="offline_access patient/Observation.read")
    assert again.status_code == 200


def test_refresh_token_is_bound_to_its_client(ehr: RunningEHR) -> None:
    issued = tokens(ehr)
    r = httpx.post(ehr.endpoints.token, data={"grant_type": "refresh_token",
                                               "refresh_token": issued["refresh_token"]},
                   auth=("web-app", SECRETS["web-app"]))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert refresh(ehr, issued["refresh_token"]).status_code == 200  # still the owner's


def test_no_refresh_token_without_offline_access(ehr: RunningEHR) -> None:
    issued = tokens(ehr, scope="launch/patient patient/*.rs")
    assert "refresh_token" not in issued and "id_token" not in issued


def test_public_client_cannot_use_client_credentials(ehr: RunningEHR) -> None:
    r = httpx.post(ehr.endpoints.token, data={"grant_type": "client_credentials", "scope": "system/*.rs",
                                               "client_id": "s4s-jupyter"})
    assert r.status_code in (400, 401) and r.json()["error"] in ("invalid_client", "unauthorized_client")


def test_client_credentials_for_confidential_clients_with_system_scopes(ehr: RunningEHR) -> None:
    auth = ("s4s-broker", SECRETS["s4s-broker"])
    ok = httpx.post(ehr.endpoints.token, data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                    auth=auth)
    assert ok.status_code == 200 and ok.headers["cache-control"] == "no-store"
    body = ok.json()
    assert body["token_type"] == "Bearer" and "refresh_token" not in body and "patient" not in body
    info = ehr.services.introspector.introspect(body["access_token"])
    assert info.active and info.scope == "system/*.rs" and info.client_id == "s4s-broker" and info.sub is None
    for bad in ("patient/*.rs", "system/*.cruds", "system/*.rs openid", "", "nonsense"):
        r = httpx.post(ehr.endpoints.token, data={"grant_type": "client_credentials", "scope": bad},
                       auth=auth)
        assert r.status_code == 400 and r.json()["error"] == "invalid_scope", bad


def test_wrong_or_missing_client_secret_is_401_with_basic_challenge(ehr: RunningEHR) -> None:
    for auth in (("s4s-broker", "wrong"), ("no-such-client", "x"), ("s4s-broker", "")):
        r = httpx.post(ehr.endpoints.token, data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                       auth=auth)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        assert r.headers["www-authenticate"].startswith("Basic")
    # a confidential client must authenticate even when it sends its client_id
    code, verifier, params = get_code(ehr, client_id="web-app", redirect_uri="https://app.example.org/callback")
    r = exchange(ehr, code, verifier, params)
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"
    r = exchange(ehr, code, verifier, params, auth=("web-app", "wrong"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = exchange(ehr, code, verifier, params, auth=("web-app", SECRETS["web-app"]))
    assert r.status_code == 200


def test_secrets_in_the_query_string_are_refused(ehr: RunningEHR) -> None:
    code, verifier, params = get_code(ehr)
    r = httpx.post(ehr.endpoints.token, params={"code": code, "code_verifier": verifier},
                   data={"grant_type": "authorization_code", "redirect_uri": params["redirect_uri"],
                         "client_id": "s4s-jupyter"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    issued = exchange(ehr, code, verifier, params).json()  # the code was not consumed
    r = httpx.post(ehr.endpoints.introspect, params={"token": issued["access_token"]},
                   auth=("s4s-introspection", SECRETS["s4s-introspection"]))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_unsupported_grant_type_and_methods(ehr: RunningEHR) -> None:
    r = httpx.post(ehr.endpoints.token, data={"grant_type": "password", "username": "u", "password": "p",
                                               "client_id": "s4s-jupyter"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = httpx.post(ehr.endpoints.token, json={"grant_type": "client_credentials"},
                   auth=("s4s-broker", SECRETS["s4s-broker"]))
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"  # not a form: no params
    r = httpx.get(ehr.endpoints.token)
    assert r.status_code == 405 and r.json()["error"] == "invalid_request"


def test_introspection_needs_an_authenticated_confidential_client(ehr: RunningEHR) -> None:
    issued = tokens(ehr)
    for auth, data in ((None, {}), (None, {"client_id": "s4s-jupyter"}), (("s4s-introspection", "wrong"), {}),
                       (None, {"client_id": "s4s-introspection",
                               "client_secret": SECRETS["s4s-introspection"]})):  # secret in body: refused
        r = httpx.post(ehr.endpoints.introspect, data={"token": issued["access_token"], **data}, auth=auth)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", data
    r = httpx.post(ehr.endpoints.introspect, data={"token": issued["access_token"]},
                   auth=("s4s-broker", SECRETS["s4s-broker"]))
    assert r.status_code == 200 and r.json()["active"] is True
    assert r.headers["cache-control"] == "no-store"


def test_introspection_answers(ehr: RunningEHR) -> None:
    issued = tokens(ehr)
    auth = ("s4s-introspection", SECRETS["s4s-introspection"])
    info = httpx.post(ehr.endpoints.introspect, data={"token": issued["access_token"],
                                                      "token_type_hint": "access_token"}, auth=auth).json()
    user = next(u for u in ehr.plan.users if len(u.patient_ids) == 1)
    assert info["active"] is True and info["patient"] == user.patient_ids[0]
    assert info["scope"] == issued["scope"] and info["client_id"] == "s4s-jupyter"
    assert info["sub"] == user.username and info["iss"] == ehr.fhir_base
    assert info["fhirUser"] == f"{ehr.fhir_base}/Patient/{user.patient_ids[0]}"
    assert isinstance(info["exp"], int)
    # a refresh token is never a bearer credential, garbage is unknown: both only {"active": false}
    for token in (issued["refresh_token"], "garbage", "", issued["access_token"] + "x"):
        r = httpx.post(ehr.endpoints.introspect, data={"token": token}, auth=auth)
        assert r.status_code == 200 and r.json() == {"active": False}
    r = httpx.post(ehr.endpoints.introspect, data={}, auth=auth)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_revocation(ehr: RunningEHR) -> None:
    issued = tokens(ehr)
    # another client cannot revoke it
    r = httpx.post(ehr.endpoints.revoke, data={"token": issued["access_token"]},
                   auth=("web-app", SECRETS["web-app"]))
    assert r.status_code == 400
    assert active(ehr, issued["access_token"])
    # unknown tokens: 200 and nothing happens (RFC 7009 2.2)
    r = httpx.post(ehr.endpoints.revoke, data={"token": "garbage", "client_id": "s4s-jupyter"})
    assert r.status_code == 200
    # revoking the access token ends the authorization: refresh refused too
    r = httpx.post(ehr.endpoints.revoke, data={"token": issued["access_token"], "client_id": "s4s-jupyter",
                                               "token_type_hint": "access_token"})
    assert r.status_code == 200
    assert not active(ehr, issued["access_token"])
    assert refresh(ehr, issued["refresh_token"]).json()["error"] == "invalid_grant"
    r = httpx.post(ehr.endpoints.revoke, data={"client_id": "s4s-jupyter"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
