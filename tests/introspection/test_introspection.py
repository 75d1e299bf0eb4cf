"""The Token Introspection Service: RFC 7662 for authenticated callers, in relay and FHIR-oracle modes,
with real tokens from the EHR's launch pages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from s4s_jupyter.core.introspection import IntrospectionResult
from servers.ehr.oauth.clients import BROKER_CLIENT_ID
from servers.introspection.deciders import CachedDecider
from servers.introspection.settings import Mode
from tests.broker.conftest import SECRETS
from tests.broker.launch import SCOPE, launch
from tests.broker.peers import refused_url
from tests.introspection.conftest import EHR

BROKER_AUTH = (BROKER_CLIENT_ID, SECRETS[BROKER_CLIENT_ID])


def user_token(ehr: EHR, n: int = 0, scope: str = SCOPE) -> dict[str, Any]:
    patient = ehr.plan.patients[n]
    user = next(u for u in ehr.plan.users if u.patient_ids == (patient.id,))
    return launch(ehr.url, user.username, user.password, patient.id, scope=scope)


def ask(url: str, token: str, auth: Any = BROKER_AUTH, **form: str) -> httpx.Response:
    return httpx.post(url, data={"token": token, **form}, auth=auth)


@pytest.mark.parametrize("mode", [Mode.RELAY, Mode.AUTO])
def test_relay_answers_the_smart_introspection_shape(intro_ehr: EHR, start_service: Callable[..., str],
                                                      mode: Mode) -> None:
    url = start_service(mode=mode)
    tok = user_token(intro_ehr)
    r = ask(url, tok["access_token"])
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["active"] is True
    assert body["patient"] == tok["patient"] == intro_ehr.plan.patients[0].id
    assert body["scope"] == tok["scope"] and body["client_id"] == "s4s-jupyter"
    assert abs(body["exp"] - (time.time() + tok["expires_in"])) < 30
    assert body["fhirUser"] and body["iss"] == intro_ehr.fhir
    for bad in ("nope", tok.get("refresh_token") or "x" * 40, tok["access_token"] + "x"):
        assert ask(url, bad).json() == {"active": False}
    # the legacy patient field asks "active for this patient?"
    assert ask(url, tok["access_token"], patient=tok["patient"]).json()["active"] is True
    assert ask(url, tok["access_token"], patient=intro_ehr.plan.patients[1].id).json() == {"active": False}


def test_callers_must_authenticate(intro_ehr: EHR, start_service: Callable[..., str]) -> None:
    url = start_service(mode=Mode.RELAY)
    tok = user_token(intro_ehr)["access_token"]
    for auth in (None, (BROKER_CLIENT_ID, "wrong"), ("s4s-jupyter", ""), ("unknown", "x")):
        r = ask(url, tok, auth=auth)
        assert r.status_code == 401, auth
        assert r.json()["error"] == "invalid_client"
        assert r.headers["www-authenticate"].startswith("Basic")
    # a bearer token of a registered confidential client (the broker's client_credentials token) is fine
    cc = httpx.post(f"{intro_ehr.url}/auth/token", auth=BROKER_AUTH,
                    data={"grant_type": "client_credentials", "scope": "system/Patient.rs"})
    assert cc.status_code == 200, cc.text
    r = httpx.post(url, data={"token": tok}, headers={"Authorization": f"Bearer {cc.json()['access_token']}"})
    assert r.status_code == 200 and r.json()["active"] is True
    # a user's token (issued to the public kit client) is not a caller credential
    r = httpx.post(url, data={"token": tok}, headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 401
    # RFC 7662 2.1 request form
    assert httpx.post(url, data={}, auth=BROKER_AUTH).status_code == 400
    assert httpx.post(url, json={"token": tok}, auth=BROKER_AUTH).status_code == 400


def test_revocation_is_seen_within_the_cache_ttl(intro_ehr: EHR, start_service: Callable[..., str]) -> None:
    url = start_service(mode=Mode.RELAY, cache_ttl=0.5)
    tok = user_token(intro_ehr, 1)["access_token"]
    assert ask(url, tok).json()["active"] is True
    assert httpx.post(f"{intro_ehr.url}/auth/revoke", data={"token": tok, "client_id": "s4s-jupyter"}
                      ).status_code == 200
    time.sleep(0.6)
    assert ask(url, tok).json() == {"active": False}


def test_fhir_oracle_mode_for_ehrs_without_introspection(intro_ehr: EHR,
                                                         start_service: Callable[..., str]) -> None:
    url = start_service(mode=Mode.FHIR_ORACLE, cache_ttl=0.5)
    tok = user_token(intro_ehr, 2)
    patient = tok["patient"]
    body = ask(url, tok["access_token"], patient=patient).json()
    assert body["active"] is True and body["patient"] == patient
    assert body["scope"] == "patient/ImagingStudy.read"
    # someone else's patient: the EHR answers 404 to the token, so not active for them
    assert ask(url, tok["access_token"], patient=intro_ehr.plan.patients[0].id).json() == {"active": False}
    assert ask(url, tok["access_token"], patient="../Observation").json() == {"active": False}
    # without the legacy field: the EHR's Patient search, filtered to the token's patient
    body = ask(url, tok["access_token"]).json()
    assert body["active"] is True and body["patient"] == patient
    assert ask(url, "not-a-token", patient=patient).json() == {"active": False}
    revoke = {"token": tok["access_token"], "client_id": "s4s-jupyter"}
    assert httpx.post(f"{intro_ehr.url}/auth/revoke", data=revoke).status_code == 200
    time.sleep(0.6)
    assert ask(url, tok["access_token"], patient=patient).json() == {"active": False}


def test_ehr_unreachable_fails_closed(start_service: Callable[..., str], intro_ehr: EHR) -> None:
    tok = user_token(intro_ehr)["access_token"]
    for mode in (Mode.RELAY, Mode.FHIR_ORACLE):
        url = start_service(mode=mode, ehr_fhir=refused_url().replace("/dicom-web", "/fhir"))
        r = ask(url, tok, patient=intro_ehr.plan.patients[0].id)
        assert r.status_code == 502, r.text
        assert "active" not in r.json() and r.json()["error"] == "temporarily_unavailable"
    # the service's own credentials refused by the EHR: also no answer
    url = start_service(mode=Mode.RELAY, client_secret="wrong")
    assert ask(url, tok).status_code == 502


class _Answers:
    """An inner decider giving fixed answers and counting calls (the cache is what is tested)."""

    def __init__(self, result: IntrospectionResult) -> None:
        self.result = result
        self.calls = 0

    async def introspect(self, token: str, patient: str | None = None) -> IntrospectionResult:
        self.calls += 1
        return self.result


def test_cache_never_outlives_exp_nor_ttl() -> None:
    now = [1000.0]
    inner = _Answers(IntrospectionResult(active=True, scope="patient/*.rs", patient="p", exp=1005))
    cache = CachedDecider(inner, ttl=60, clock=lambda: now[0])
    run = asyncio.run
    assert run(cache.introspect("t")).active and inner.calls == 1
    assert run(cache.introspect("t")).active and inner.calls == 1  # cached
    assert run(cache.introspect("t", "p")).active and inner.calls == 2  # keyed by patient as well
    now[0] = 1005.0  # exp reached: asked again, and an answer already past exp is inactive
    assert run(cache.introspect("t")) == IntrospectionResult(active=False) and inner.calls == 3
    inner.result = IntrospectionResult(active=True, scope="s", patient="p")  # no exp: the TTL bounds it
    assert run(cache.introspect("u")).active and inner.calls == 4
    now[0] += 59
    assert run(cache.introspect("u")).active and inner.calls == 4
    now[0] += 2
    assert run(cache.introspect("u")).active and inner.calls == 5
    inner.result = IntrospectionResult(active=False)  # negative answers are never cached
    assert not run(cache.introspect("v")).active and not run(cache.introspect("v")).active
    assert inner.calls == 7
