"""Attack cases from the OAuth 2.0 Security BCP (RFC 9700 sections 2 and 4) and SMART App Launch 2.x
"Best Practices" that the other attack files do not already cover. Each test names the section.

Already covered elsewhere (not repeated here): redirect URI validation and open redirection (4.1, 4.11:
``test_authorize_attacks.py``), code replay and lifetime (4.5, RFC 6749 4.1.2), refresh rotation,
family revocation and expiry (4.14), client authentication and ``client_credentials`` (2.5, 4.15),
introspection and revocation (``test_token_attacks.py``), clickjacking and referrer headers, XSRF and
one-decision consent (4.2, 4.16: ``test_pages.py``), mix-up via ``iss`` (4.4: ``test_issuer_parameter.py``),
tokens outside the Authorization header and refresh tokens as bearer (4.3, 4.9: ``tests/ehr/fhir``).
"""

from __future__ import annotations

import httpx
import pytest

from s4s_jupyter.core.pkce import make_verifier, s256_challenge
from tests.ehr.conftest import SECRETS, RunningEHR

from .browserless import PageUser, callback_params, launch_params
from .helpers import active, authorize_raw, exchange, get_code, refresh, tokens

REGISTERED = "http://127.0.0.1:8765/callback"
WEB_REDIRECT = "https://app.example.org/callback"


def test_code_injection_with_a_code_issued_to_another_client_fails(ehr: RunningEHR) -> None:
    """RFC 9700 4.5: a code stolen from one client and redeemed by another, public or authenticated
    confidential, is ``invalid_grant``; the rightful client can still redeem it."""
    code, verifier, params = get_code(ehr)  # issued to the kit (public)
    r = exchange(ehr, code, verifier, params, client_id="other-public-app")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = exchange(ehr, code, verifier, {**params, "client_id": "web-app"},
                 auth=("web-app", SECRETS["web-app"]))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert exchange(ehr, code, verifier, params).status_code == 200

    code, verifier, params = get_code(ehr, client_id="web-app", redirect_uri=WEB_REDIRECT)  # confidential
    r = exchange(ehr, code, verifier, {**params, "client_id": "s4s-jupyter"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = exchange(ehr, code, verifier, params, auth=("web-app", SECRETS["web-app"]))
    assert r.status_code == 200


def test_pkce_downgrade_and_challenge_as_verifier_fail(ehr: RunningEHR) -> None:
    """RFC 9700 4.8 / 2.1.1, RFC 7636 4.6: a request stripped of its challenge is refused up front (so no
    code exists without one); the challenge from the authorization URL replayed as the verifier, a
    ``plain``-style verifier, or a verifier of the wrong length do not redeem the code."""
    params, _ = launch_params(ehr.url, redirect_uri=REGISTERED, code_challenge=None,
                              code_challenge_method=None)
    r = authorize_raw(ehr, params)
    assert r.status_code == 302 and callback_params(r.headers["location"])["error"] == "invalid_request"
    plain_verifier = make_verifier()
    params, _ = launch_params(ehr.url, redirect_uri=REGISTERED, code_challenge=plain_verifier,
                              code_challenge_method="plain")
    r = authorize_raw(ehr, params)
    assert r.status_code == 302 and "code" not in callback_params(r.headers["location"])

    code, verifier, params = get_code(ehr)
    for wrong in (params["code_challenge"], s256_challenge(params["code_challenge"]), verifier[:42],
                  verifier + "x" * 100, verifier.upper()):
        r = exchange(ehr, code, wrong, params)
        assert r.status_code == 400 and r.json()["error"] in ("invalid_grant", "invalid_request"), wrong
    assert exchange(ehr, code, verifier, params).status_code == 200


def test_redirect_uri_is_required_at_the_token_endpoint(ehr: RunningEHR) -> None:
    """RFC 6749 4.1.3, SMART App Launch 2.x (token request ``redirect_uri`` required): the token request
    must repeat the authorization request's redirect URI exactly (the port of a loopback one too)."""
    code, verifier, params = get_code(ehr)
    for wrong in (None, "", "http://127.0.0.1/callback", "http://localhost:8765/callback",
                  REGISTERED + "/", REGISTERED + "?x=1"):
        r = exchange(ehr, code, verifier, params, redirect_uri=wrong)
        assert r.status_code == 400 and r.json()["error"] in ("invalid_grant", "invalid_request"), wrong
    assert exchange(ehr, code, verifier, params).status_code == 200


def test_refresh_token_is_bound_to_its_public_client(ehr: RunningEHR) -> None:
    """RFC 9700 4.14.2 (and RFC 6749 6): another public client presenting a refresh token gets nothing,
    and a confidential client must authenticate to use its own."""
    issued = tokens(ehr)
    r = refresh(ehr, issued["refresh_token"], client_id="other-public-app")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = refresh(ehr, issued["refresh_token"], client_id="no-such-client")
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"
    assert refresh(ehr, issued["refresh_token"]).status_code == 200

    code, verifier, params = get_code(ehr, client_id="web-app", redirect_uri=WEB_REDIRECT)
    web = exchange(ehr, code, verifier, params, auth=("web-app", SECRETS["web-app"])).json()
    r = refresh(ehr, web["refresh_token"], client_id="web-app")  # no secret
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"
    r = httpx.post(ehr.endpoints.token, data={
        "grant_type": "refresh_token", "refresh_token": web["refresh_token"], "client_id": "web-app",
        "client_secret": SECRETS["web-app"]})
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"  # secret in the body: no
    assert active(ehr, web["access_token"])


def test_another_public_client_cannot_revoke_or_introspect(ehr: RunningEHR) -> None:
    """RFC 7009 2.1 (the token must belong to the requesting client), RFC 7662 2.1 (introspection needs an
    authenticated caller): a public client that claims another's tokens changes and learns nothing."""
    issued = tokens(ehr)
    for token in (issued["access_token"], issued["refresh_token"]):
        r = httpx.post(ehr.endpoints.revoke, data={"token": token, "client_id": "other-public-app"})
        assert r.status_code in (200, 400) and "active" not in r.text
        assert active(ehr, issued["access_token"])
    r = httpx.post(ehr.endpoints.introspect, data={"token": issued["access_token"],
                                                   "client_id": "other-public-app"})
    assert r.status_code == 401 and "scope" not in r.json()
    assert refresh(ehr, issued["refresh_token"]).status_code == 200


def test_nothing_that_carries_a_code_or_token_is_cacheable(ehr: RunningEHR) -> None:
    """RFC 6749 5.1, RFC 9700 4.3 / SMART "Best Practices": token answers, token errors, introspection,
    revocation, the pages and the redirect that carries the code are all ``no-store``."""
    params, verifier = launch_params(ehr.url)
    user = next(u for u in ehr.plan.users if len(u.patient_ids) == 1)
    with PageUser(ehr.url) as person:
        person.open("/auth/authorize", params)
        assert person.page is not None and person.page.headers["cache-control"] == "no-store"
        person.login(user.username, user.password)
        form_page = person.page
        assert form_page is not None and form_page.headers["cache-control"] == "no-store"
        redirect = person.decide()
    assert redirect.headers["cache-control"] == "no-store" and "code=" in redirect.headers["location"]
    code = callback_params(redirect.headers["location"])["code"]
    answers = [exchange(ehr, code, verifier, params),
               exchange(ehr, code, verifier, params),  # the replay's error
               httpx.post(ehr.endpoints.introspect, data={"token": "x"},
                          auth=("s4s-introspection", SECRETS["s4s-introspection"])),
               httpx.post(ehr.endpoints.revoke, data={"token": "x", "client_id": "s4s-jupyter"}),
               httpx.post(ehr.endpoints.token, data={"grant_type": "client_credentials"},
                          auth=("s4s-broker", "wrong"))]
    for r in answers:
        assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache", r.url


def test_only_the_code_flow_exists(ehr: RunningEHR) -> None:
    """RFC 9700 2.1.2 and 2.4: no implicit or hybrid response types, no password grant; a token never
    appears in a redirect."""
    for response_type in ("token", "id_token", "code token", "code id_token", "id_token token", "none", ""):
        params, _ = launch_params(ehr.url, redirect_uri=REGISTERED, response_type=response_type or None)
        r = authorize_raw(ehr, params)
        location = r.headers.get("location", "")
        assert "access_token" not in location and "id_token=" not in location and "code=" not in location
        if r.status_code == 302:
            assert callback_params(location)["error"] in ("unsupported_response_type", "invalid_request")
        else:
            assert r.status_code == 400, response_type
    r = httpx.post(ehr.endpoints.token, data={"grant_type": "password", "username": "caregiver",
                                               "password": "demo-caregiver", "client_id": "s4s-jupyter"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize("name", ["client_id", "redirect_uri", "response_type", "code_challenge_method",
                                  "nonce"])
def test_repeated_identity_parameters_are_refused(ehr: RunningEHR, name: str) -> None:
    """RFC 6749 3.1 ("parameters MUST NOT be included more than once"): a second ``client_id`` or
    ``redirect_uri`` must not let one value be checked and another used."""
    params, _ = launch_params(ehr.url, redirect_uri=REGISTERED)
    other = {"client_id": "other-public-app", "redirect_uri": "http://127.0.0.1:9/callback",
             "response_type": "token", "code_challenge_method": "plain", "nonce": "n2"}[name]
    r = authorize_raw(ehr, [*params.items(), (name, other)])
    assert r.status_code in (302, 400) and "code=" not in r.headers.get("location", "")
    if r.status_code == 302:
        assert r.headers["location"].startswith(REGISTERED + "?")
        assert callback_params(r.headers["location"])["error"] == "invalid_request"


def test_redirects_after_a_post_are_303_never_307(ehr: RunningEHR) -> None:
    """RFC 9700 4.12: the browser must not re-post a form (credentials, XSRF token) to the client."""
    user = next(u for u in ehr.plan.users if len(u.patient_ids) == 1)
    params, _ = launch_params(ehr.url)
    with PageUser(ehr.url) as person:
        started = person.http.post("/auth/authorize", data=params)
        assert started.status_code == 303
        person.go(started)
        login = person.http.post("/auth/login", data={"_xsrf": person.http.cookies["_xsrf"],
                                                     "username": user.username, "password": user.password})
        assert login.status_code == 303
        person.go(login)
        decided = person.decide(approve=False)
    assert decided.status_code == 303
    assert callback_params(decided.headers["location"])["error"] == "access_denied"
