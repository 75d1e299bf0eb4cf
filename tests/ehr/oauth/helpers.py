"""Small raw-HTTP helpers for the attack tests (raw so requests can be malformed on purpose)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.ehr.conftest import SECRETS, RunningEHR

from .browserless import PageUser, callback_params, launch_params


def user_with_one_patient(ehr: RunningEHR) -> Any:
    return next(u for u in ehr.plan.users if len(u.patient_ids) == 1)


def get_code(ehr: RunningEHR, **overrides: str | None) -> tuple[str, str, dict[str, str]]:
    """Drive the pages for a one-patient user; returns (code, verifier, authorize params)."""
    params, verifier = launch_params(ehr.url, **overrides)
    user = user_with_one_patient(ehr)
    with PageUser(ehr.url) as person:
        location = person.authorize("/auth/authorize", params, user.username, user.password)
    got = callback_params(location)
    assert got["state"] == params["state"], location
    return got["code"], verifier, params


def exchange(ehr: RunningEHR, code: str, verifier: str | None, params: dict[str, str],
             **overrides: Any) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": params["redirect_uri"],
            "client_id": params["client_id"], "code_verifier": verifier}
    auth = overrides.pop("auth", None)
    data.update(overrides)
    return httpx.post(ehr.endpoints.token, data={k: v for k, v in data.items() if v is not None}, auth=auth)


def tokens(ehr: RunningEHR, **overrides: str | None) -> dict[str, Any]:
    code, verifier, params = get_code(ehr, **overrides)
    r = exchange(ehr, code, verifier, params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def refresh(ehr: RunningEHR, refresh_token: str, client_id: str = "s4s-jupyter",
            **extra: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id, **extra}
    return httpx.post(ehr.endpoints.token, data=data)


def active(ehr: RunningEHR, token: str) -> bool:
    r = httpx.post(ehr.endpoints.introspect, data={"token": token},
                   auth=("s4s-introspection", SECRETS["s4s-introspection"]))
    assert r.status_code == 200
    body = r.json()
    if body["active"] is not True:
        assert body == {"active": False}  # nothing else is told about an inactive token
        return False
    return True


def authorize_raw(ehr: RunningEHR, params: Any) -> httpx.Response:
    """One authorize request, no redirects followed."""
    return httpx.get(ehr.endpoints.authorize, params=params, follow_redirects=False)
