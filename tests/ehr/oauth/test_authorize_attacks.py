"""Malformed and hostile authorization requests (RFC 6749 4.1.2.1, RFC 7636, RFC 8252 7.3, RFC 9700 4.1,
SMART App Launch). Rule: an error is redirected only to a verified redirect URI; otherwise it is a page."""

from __future__ import annotations

import httpx
import pytest

from tests.ehr.conftest import RunningEHR

from .browserless import callback_params, launch_params
from .helpers import authorize_raw, exchange, get_code

REGISTERED = "http://127.0.0.1:8765/callback"


def assert_error_page(r: httpx.Response) -> None:
    assert r.status_code == 400, r.text
    assert "location" not in r.headers
    assert r.headers["content-type"].startswith("text/html")
    assert "cannot continue" in r.text


def assert_redirected_error(r: httpx.Response, redirect_uri: str, error: str, state: str | None) -> None:
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    assert location.startswith(redirect_uri + "?")
    got = callback_params(location)
    assert got["error"] == error and "code" not in got
    assert got.get("state") == state


@pytest.mark.parametrize("redirect_uri", [
    "http://127.0.0.1.evil.example/callback",
    "http://127.0.0.1:80@evil.example/callback",
    "http://evil.example/callback",
    "https://127.0.0.1/callback",
    "http://127.0.0.1/callbackx",
    "http://127.0.0.1/callback/../evil",
    "http://127.0.0.1/callback?next=http://evil.example",
    "http://127.0.0.1/callback#frag",
    "http://127.0.0.1:99999/callback",
    "http://127.0.0.1:/callback",
    "http://[::1]/callback",
    "http://127.0.0.1/other",
    "//evil.example/callback",
    "javascript:alert(1)",
    "",
])
def test_unregistered_redirect_uri_gets_an_error_page_never_a_redirect(ehr: RunningEHR,
                                                                        redirect_uri: str) -> None:
    params, _ = launch_params(ehr.url, redirect_uri=redirect_uri or None)
    assert_error_page(authorize_raw(ehr, params))


@pytest.mark.parametrize("redirect_uri", [
    "http://127.0.0.1:8765/callback", "http://127.0.0.1/callback", "http://localhost:51234/callback",
    "http://127.0.0.1:8888/s4s/oauth/callback",
])
def test_registered_loopback_redirect_accepts_any_port(ehr: RunningEHR, redirect_uri: str) -> None:
    params, _ = launch_params(ehr.url, redirect_uri=redirect_uri)
    r = authorize_raw(ehr, params)
    assert r.status_code == 303 and r.headers["location"] == "/auth/login"


def test_unknown_client_gets_an_error_page(ehr: RunningEHR) -> None:
    params, _ = launch_params(ehr.url, client_id="no-such-client")
    assert_error_page(authorize_raw(ehr, params))
    params, _ = launch_params(ehr.url, client_id=None)
    assert_error_page(authorize_raw(ehr, params))


@pytest.mark.parametrize(("overrides", "error"), [
    ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),  # no PKCE
    ({"code_challenge_method": None}, "invalid_request"),  # method defaults to plain: refused
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": "S512"}, "invalid_request"),
    ({"code_challenge": "too-short"}, "invalid_request"),
    ({"aud": None}, "invalid_request"),
    ({"aud": "http://evil.example/fhir"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"scope": "patient/*.rs unknown_scope"}, "invalid_scope"),
    ({"scope": "system/*.rs"}, "invalid_scope"),  # system/ only via client_credentials
    ({"scope": "patient/*.cruds"}, "invalid_scope"),  # more than the client is registered for
    ({"scope": None}, "invalid_scope"),
])
def test_invalid_request_is_redirected_with_error_and_state(ehr: RunningEHR, overrides: dict[str, str | None],
                                                           error: str) -> None:
    params, _ = launch_params(ehr.url, redirect_uri=REGISTERED, **overrides)
    assert_redirected_error(authorize_raw(ehr, params), REGISTERED, error, params["state"])


def test_wrong_aud_names_this_servers_fhir_base_only(ehr: RunningEHR) -> None:
    params, _ = launch_params(ehr.url, redirect_uri=REGISTERED, aud=ehr.fhir_base + "/")
    assert authorize_raw(ehr, params).status_code == 303  # a trailing slash is the same base
    params, _ = launch_params(ehr.url, redirect_uri=REGISTERED, aud=ehr.url)
    assert_redirected_error(authorize_raw(ehr, params), REGISTERED, "invalid_request", params["state"])


def test_missing_state_is_refused(ehr: RunningEHR) -> None:
    params, _ = launch_params(ehr.url, redirect_uri=REGISTERED, state=None)
    assert_redirected_error(authorize_raw(ehr, params), REGISTERED, "invalid_request", None)


def test_repeated_parameters_are_refused(ehr: RunningEHR) -> None:
    params, _ = launch_params(ehr.url, redirect_uri=REGISTERED)
    for name in ("state", "scope", "code_challenge", "aud"):
        pairs = [*params.items(), (name, params[name] + "x")]
        r = authorize_raw(ehr, pairs)
        if r.status_code == 302:  # redirected once the redirect URI is verified, else an error page
            assert callback_params(r.headers["location"])["error"] == "invalid_request"
        else:
            assert_error_page(r)


def test_authorize_by_post_form_is_accepted(ehr: RunningEHR) -> None:
    params, _ = launch_params(ehr.url)
    r = httpx.post(ehr.endpoints.authorize, data=params, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/auth/login"


def test_code_is_bound_to_redirect_uri_client_and_verifier(ehr: RunningEHR) -> None:
    code, verifier, params = get_code(ehr)
    r = exchange(ehr, code, verifier, params, redirect_uri="http://127.0.0.1:9/callback")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = exchange(ehr, code, "x" * 64, params)  # wrong verifier
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = exchange(ehr, code, None, params)  # no verifier
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = exchange(ehr, code, verifier, params, client_id="web-app")  # another client (unauthenticated)
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"
    # none of the failures above consumed the code: the rightful exchange still works
    assert exchange(ehr, code, verifier, params).status_code == 200
