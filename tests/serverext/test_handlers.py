"""The extension's handlers through jupyter_server (``jp_fetch``) against the real demo EHR's pages.

The browser's part (following the redirect to the EHR, its login, picker and consent pages) is done by
the kit's FormLogin over HTTP; the callback then goes to the extension exactly as the EHR's redirect
would send it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from tornado.httpclient import HTTPResponse

from s4s_jupyter.client.automation import FormLogin
from s4s_jupyter.client.tokens import TokenStore, store_key
from tests.serverext.conftest import BASE_URL, UNREACHABLE_EHR, CookieFetch

pytestmark = pytest.mark.timeout(60)


async def start_login(browser_fetch: CookieFetch, **params: str) -> str:
    """GET {base}/s4s/login; the EHR authorize URL it redirects to."""
    r = await browser_fetch("s4s", "login", params=params, follow_redirects=False, raise_error=False)
    assert r.code == 302, r.body
    assert r.headers["Cache-Control"] == "no-store"
    return str(r.headers["Location"])


async def through_ehr(authorize_url: str, user: dict[str, Any], **kwargs: Any) -> str:
    """What the browser does at the EHR: its real pages, up to the redirect (not followed)."""
    login = FormLogin(user["username"], user["password"], follow_callback=False, **kwargs)
    redirect = await asyncio.to_thread(login, authorize_url)
    assert redirect is not None
    return redirect


async def callback(browser_fetch: CookieFetch, redirect: str, **kwargs: Any) -> HTTPResponse:
    parts = urlsplit(redirect)
    assert parts.path == f"{BASE_URL}s4s/oauth/callback"
    params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return await browser_fetch("s4s", "oauth", "callback", params=params, raise_error=False, **kwargs)


async def status(browser_fetch: CookieFetch) -> dict[str, Any]:
    r = await browser_fetch("s4s", "api", "status", raise_error=False)
    assert r.code == 200
    assert r.headers["Cache-Control"] == "no-store"
    return dict(json.loads(r.body))


def stored(token_path: Path, ehr_stack: dict[str, Any]) -> Any:
    return TokenStore(token_path).get(store_key(ehr_stack["ehr_fhir"], "s4s-jupyter"))


async def test_login_redirects_to_the_ehr_with_pkce_and_a_callback_under_base_url(
        browser_fetch: CookieFetch, ehr_stack: dict[str, Any]) -> None:
    url = await start_login(browser_fetch)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(ehr_stack["ehr_fhir"].rsplit("/fhir", 1)[0])
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["redirect_uri"][0].endswith(f"{BASE_URL}s4s/oauth/callback")
    assert query["client_id"] == ["s4s-jupyter"] and query["aud"] == [ehr_stack["ehr_fhir"]]
    assert len(query["state"][0]) >= 32
    assert "code_verifier" not in url


async def test_full_login_stores_tokens_and_status_reports_them_without_tokens(
        browser_fetch: CookieFetch, ehr_stack: dict[str, Any], token_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    user = ehr_stack["users"][0]
    assert (await status(browser_fetch))["logged_in"] is False
    redirect = await through_ehr(await start_login(browser_fetch), user)
    r = await callback(browser_fetch, redirect)
    assert r.code == 200, r.body
    page = r.body.decode()
    assert 'data-s4s-login="ok"' in page and user["patient_ids"][0] in page
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Referrer-Policy"] == "no-referrer"
    tokens = stored(token_path, ehr_stack)
    assert tokens is not None and tokens.patient == user["patient_ids"][0] and tokens.refresh_token
    assert oct(token_path.stat().st_mode & 0o777) == "0o600"
    body = await status(browser_fetch)
    assert body["logged_in"] is True and body["patient"] == user["patient_ids"][0]
    assert "patient/*.rs" in body["scopes"] and body["expires_at"] and body["refreshable"]
    raw = json.dumps(body)
    assert tokens.access_token not in raw and tokens.refresh_token not in raw
    assert tokens.access_token not in page
    query = parse_qs(urlsplit(redirect).query)
    # the server's logs (not httpcore's DEBUG trace of the test's own browser stand-in): the callback
    # request was logged, its secrets were not
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpcore"))
    assert "/s4s/oauth/callback" in logged
    for secret in (query["code"][0], query["state"][0], tokens.access_token, tokens.refresh_token):
        assert secret not in logged
    # the stored token is the EHR's real one: it reads the patient
    fhir = httpx.get(f"{ehr_stack['ehr_fhir']}/Patient/{tokens.patient}",
                     headers={"Authorization": f"Bearer {tokens.access_token}"})
    assert fhir.status_code == 200


async def test_bad_state_is_refused_before_the_code_is_used(
        browser_fetch: CookieFetch, ehr_stack: dict[str, Any], token_path: Path) -> None:
    redirect = await through_ehr(await start_login(browser_fetch), ehr_stack["users"][0])
    query = {k: v[-1] for k, v in parse_qs(urlsplit(redirect).query).items()}
    forged = f"{BASE_URL}s4s/oauth/callback?" + urlencode({**query, "state": secrets.token_urlsafe(32)})
    r = await callback(browser_fetch, forged)
    assert r.code == 400 and 'data-s4s-login="error"' in r.body.decode()
    assert "state" in r.body.decode()
    missing = f"{BASE_URL}s4s/oauth/callback?" + urlencode({"code": query["code"]})
    assert (await callback(browser_fetch, missing)).code == 400
    assert stored(token_path, ehr_stack) is None
    # the code was never sent to the EHR: the genuine callback still completes with it
    assert (await callback(browser_fetch, redirect)).code == 200
    assert stored(token_path, ehr_stack) is not None


async def test_replayed_callback_is_refused(browser_fetch: CookieFetch, ehr_stack: dict[str, Any],
                                            token_path: Path) -> None:
    redirect = await through_ehr(await start_login(browser_fetch), ehr_stack["users"][0])
    assert (await callback(browser_fetch, redirect)).code == 200
    first = stored(token_path, ehr_stack)
    again = await callback(browser_fetch, redirect)
    assert again.code == 400 and "already used" in again.body.decode()
    assert stored(token_path, ehr_stack) == first  # nothing replaced


async def test_denied_consent_shows_the_ehrs_error(browser_fetch: CookieFetch, ehr_stack: dict[str, Any],
                                                   token_path: Path) -> None:
    redirect = await through_ehr(await start_login(browser_fetch), ehr_stack["users"][0], approve=False)
    r = await callback(browser_fetch, redirect)
    assert r.code == 400 and "access_denied" in r.body.decode()
    assert stored(token_path, ehr_stack) is None


async def test_unauthenticated_calls_are_refused(browser_fetch: CookieFetch,
                                                 ehr_stack: dict[str, Any]) -> None:
    no_auth = {"Authorization": ""}
    r = await browser_fetch("s4s", "api", "status", headers=no_auth, raise_error=False)
    assert r.code == 403
    r = await browser_fetch("s4s", "api", "logout", method="POST", body="", headers=no_auth,
                            raise_error=False)
    assert r.code == 403
    r = await browser_fetch("s4s", "login", headers=no_auth, follow_redirects=False, raise_error=False)
    assert r.code == 302 and "/login?" in r.headers["Location"]  # Jupyter's own login page
    # the callback does not bounce the code and state into a login URL: plain 403
    r = await browser_fetch("s4s", "oauth", "callback", params={"code": "x", "state": "y"}, headers=no_auth,
                       follow_redirects=False, raise_error=False)
    assert r.code == 403 and "code" not in r.headers.get("Location", "")


async def test_a_pending_login_is_bound_to_its_jupyter_user(browser_fetch: CookieFetch, jp_fetch: Any,
                                                            ehr_stack: dict[str, Any],
                                                            token_path: Path) -> None:
    redirect = await through_ehr(await start_login(browser_fetch), ehr_stack["users"][0])
    other_browser = CookieFetch(jp_fetch)  # another Jupyter identity (no login cookie of the first)
    r = await callback(other_browser, redirect)
    assert r.code == 400 and "another Jupyter user" in r.body.decode()
    assert stored(token_path, ehr_stack) is None


async def test_logout_needs_the_xsrf_token_with_a_cookie_and_revokes(
        browser_fetch: CookieFetch, ehr_stack: dict[str, Any], token_path: Path) -> None:
    redirect = await through_ehr(await start_login(browser_fetch), ehr_stack["users"][0])
    assert (await callback(browser_fetch, redirect)).code == 200
    tokens = stored(token_path, ehr_stack)
    assert tokens is not None
    # Jupyter's login cookie (set on the first token-authenticated request), without the token header
    login_cookie = next(f"{k}={v}" for k, v in browser_fetch.cookies.items() if k.startswith("username-"))
    cookie_only = {"Authorization": "", "Cookie": login_cookie}
    r = await browser_fetch("s4s", "api", "logout", method="POST", body="{}", headers=cookie_only,
                       raise_error=False)
    assert r.code == 403 and "_xsrf" in r.body.decode()
    assert stored(token_path, ehr_stack) is not None  # nothing changed
    xsrf = secrets.token_hex(16)
    with_xsrf = {"Authorization": "", "Cookie": f"{login_cookie}; _xsrf={xsrf}", "X-XSRFToken": xsrf,
                 "Content-Type": "application/json"}
    r = await browser_fetch("s4s", "api", "logout", method="POST", body="{}", headers=with_xsrf,
                       raise_error=False)
    assert r.code == 200, r.body
    assert json.loads(r.body) == {"logged_out": True, "revoked": True}
    assert stored(token_path, ehr_stack) is None
    assert TokenStore(token_path).keys() == []  # the patient's own entry went too
    assert (await status(browser_fetch))["logged_in"] is False
    fhir = httpx.get(f"{ehr_stack['ehr_fhir']}/Patient/{tokens.patient}",
                     headers={"Authorization": f"Bearer {tokens.access_token}"})
    assert fhir.status_code == 401  # revoked at the EHR
    token_endpoint = httpx.get(ehr_stack["smart_configuration"]).json()["token_endpoint"]
    refresh = httpx.post(token_endpoint, data={
        "grant_type": "refresh_token", "refresh_token": tokens.refresh_token, "client_id": "s4s-jupyter"})
    assert refresh.status_code == 400


async def test_an_ehr_that_is_not_configured_is_never_contacted(browser_fetch: CookieFetch) -> None:
    r = await browser_fetch("s4s", "login", params={"ehr": "http://127.0.0.1:10/fhir"},
                            follow_redirects=False, raise_error=False)
    assert r.code == 400 and "not configured" in r.body.decode()
    r = await browser_fetch("s4s", "api", "status", params={"ehr": "http://evil.example/fhir"},
                            raise_error=False)
    assert r.code == 400 and json.loads(r.body)["error"] == "invalid_request"


async def test_kernels_inherit_the_extension_configuration(browser_fetch: CookieFetch,
                                                           ehr_stack: dict[str, Any],
                                                           token_path: Path) -> None:
    import os

    await browser_fetch("s4s", "api", "status")
    assert os.environ["S4S_JUPYTER_BASE_URL"] == BASE_URL
    assert os.environ["S4S_EHR_URL"] == ehr_stack["ehr_fhir"]
    assert os.environ["S4S_TOKEN_STORE"] == str(token_path)


async def test_an_unreachable_ehr_gives_a_clear_502_page(browser_fetch: CookieFetch) -> None:
    r = await browser_fetch("s4s", "login", params={"ehr": UNREACHABLE_EHR}, follow_redirects=False,
                            raise_error=False)
    assert r.code == 502 and "could not be reached" in r.body.decode()
    assert 'data-s4s-login="error"' in r.body.decode()


async def test_a_kernel_session_uses_and_refreshes_the_extensions_login(
        browser_fetch: CookieFetch, ehr_stack: dict[str, Any], token_path: Path) -> None:
    import dataclasses
    import time

    import s4s_jupyter as s4s

    redirect = await through_ehr(await start_login(browser_fetch), ehr_stack["users"][0])
    assert (await callback(browser_fetch, redirect)).code == 200
    store = TokenStore(token_path)
    key = store_key(ehr_stack["ehr_fhir"], "s4s-jupyter")
    login = store.get(key)
    assert login is not None
    store.put(key, dataclasses.replace(login, expires_at=time.time() - 5))  # the access token "expired"
    assert (await status(browser_fetch))["expired"] is True

    def kernel() -> str:  # what a notebook does, in a kernel started after the login
        with s4s.connect(ehr_stack["ehr_fhir"], login=False, token_store=token_path) as ehr:
            assert ehr.logged_in and ehr.patient == login.patient
            return str(ehr.read("Patient", ehr.patient or "")["id"])  # refreshes first, then reads

    assert await asyncio.to_thread(kernel) == login.patient
    # the extension stored the login under its patient as well: a kernel naming the patient finds it
    assert store.get(store_key(ehr_stack["ehr_fhir"], "s4s-jupyter", login.patient)) is not None

    def kernel_for_the_patient() -> str:
        def no_browser(url: str) -> None:
            raise AssertionError("no new login expected")

        with s4s.connect(ehr_stack["ehr_fhir"], patient=login.patient, browser=no_browser,
                         token_store=token_path) as ehr:
            return str(ehr.read("Patient", login.patient or "")["id"])

    assert await asyncio.to_thread(kernel_for_the_patient) == login.patient
    refreshed = store.get(key)
    assert refreshed is not None and refreshed.access_token != login.access_token
    body = await status(browser_fetch)
    assert body["logged_in"] is True and body["expired"] is False and body["patient"] == login.patient


@pytest.mark.parametrize("iss", ["https://attacker.example/fhir", None])
async def test_a_forged_or_missing_iss_is_refused_at_the_callback(
        browser_fetch: CookieFetch, ehr_stack: dict[str, Any], token_path: Path, iss: str | None) -> None:
    """RFC 9207 / RFC 9700 4.4: the EHR advertises ``iss``; a callback naming another issuer, or none, is
    refused with a page that says why, and nothing is stored."""
    redirect = await through_ehr(await start_login(browser_fetch), ehr_stack["users"][0])
    query = {k: v[-1] for k, v in parse_qs(urlsplit(redirect).query).items()}
    assert query["iss"] == ehr_stack["ehr_fhir"]  # what the genuine response says
    if iss is None:
        del query["iss"]
    else:
        query["iss"] = iss
    r = await callback(browser_fetch, f"{BASE_URL}s4s/oauth/callback?" + urlencode(query))
    body = r.body.decode()
    assert r.code == 400 and 'data-s4s-login="error"' in body and "refused" in body
    assert ("mix-up" in body) if iss else ("lacks the iss" in body)
    assert stored(token_path, ehr_stack) is None
