"""The sign-in pages: contract field names, CSRF, anti-framing headers, tampered forms, single decisions
(RFC 9700 4.4 CSRF and 4.16 clickjacking, RFC 6749 10.12-10.13)."""

from __future__ import annotations

import httpx

from tests.ehr.conftest import RunningEHR

from .browserless import PageUser, callback_params, launch_params, parse_form
from .helpers import exchange, user_with_one_patient

PAGE_HEADERS = {"x-frame-options": "DENY", "referrer-policy": "no-referrer", "cache-control": "no-store"}


def assert_page_headers(r: httpx.Response) -> None:
    for name, value in PAGE_HEADERS.items():
        assert r.headers[name] == value, name
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "<script" not in r.text


def start(ehr: RunningEHR, **overrides: str | None) -> tuple[PageUser, dict[str, str], str]:
    params, verifier = launch_params(ehr.url, **overrides)
    person = PageUser(ehr.url)
    page = person.open("/auth/authorize", params)
    assert page.status_code == 200 and page.request.url.path == "/auth/login"
    return person, params, verifier


def test_every_page_forbids_framing_and_referrers(ehr: RunningEHR) -> None:
    caregiver = next(u for u in ehr.plan.users if len(u.patient_ids) > 1)
    person, _, _ = start(ehr)
    with person:
        assert person.page is not None
        assert_page_headers(person.page)
        assert_page_headers(person.login(caregiver.username, caregiver.password))  # picker
        assert_page_headers(person.pick(caregiver.patient_ids[0]))  # consent
        assert_page_headers(person.open("/auth/authorize", {"client_id": "nobody"}))  # error page
        assert_page_headers(person.http.get("/auth/consent"))
        css = person.http.get("/auth/static/ehr.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_forms_without_the_xsrf_token_are_refused(ehr: RunningEHR) -> None:
    user = user_with_one_patient(ehr)
    person, _, _ = start(ehr)
    with person:
        r = person.submit({"username": user.username, "password": user.password}, xsrf=False)
        assert r.status_code == 403 and "XSRF" in r.text
        assert person.http.get("/auth/consent").request.url.path == "/auth/consent"  # not logged in:
        assert "Sign in" in person.http.get("/auth/consent", follow_redirects=True).text
        person.open("/auth/login")
        page = person.login(user.username, user.password)
        assert page.request.url.path == "/auth/consent"
        r = person.submit({"approve": "approve", "scope": person.consent_scopes()}, xsrf=False)
        assert r.status_code == 403 and "location" not in r.headers
        # a forged token (cookie and field disagree) fails too
        form = parse_form(page.text)
        r = person.http.post(form.action, data={"_xsrf": "2|forged|token|1", "approve": "approve",
                                                "scope": "patient/*.rs"})
        assert r.status_code == 403


def test_consent_post_from_another_browser_has_no_session(ehr: RunningEHR) -> None:
    """An attacker without the victim's session cookie cannot approve the victim's request."""
    user = user_with_one_patient(ehr)
    person, _, _ = start(ehr)
    with person, PageUser(ehr.url) as attacker:
        page = person.login(user.username, user.password)
        form = parse_form(page.text)
        attacker.http.get("/auth/login")  # gets its own XSRF cookie, but no pending request
        forged = {**form.hidden, "approve": "approve", "scope": "patient/*.rs"}
        r = attacker.http.post(form.action, data=forged)
        assert r.status_code in (400, 403) and "location" not in r.headers


def test_wrong_password_does_not_advance(ehr: RunningEHR) -> None:
    user = user_with_one_patient(ehr)
    person, _, _ = start(ehr)
    with person:
        r = person.login(user.username, "wrong password")
        assert r.status_code == 401 and "wrong password" in r.text.lower()
        r = person.login("nobody", "x")
        assert r.status_code == 401
        assert person.http.get("/auth/consent", follow_redirects=True).request.url.path == "/auth/login"


def test_repeated_failed_sign_ins_end_the_request(ehr: RunningEHR) -> None:
    user = user_with_one_patient(ehr)
    person, _, _ = start(ehr)
    with person:
        for _ in range(4):
            assert person.login(user.username, "guess").status_code == 401
        r = person.login(user.username, "guess")
        assert r.status_code == 429 and "Too many" in r.text
        assert person.http.get("/auth/login").status_code == 400  # the request is gone
        assert person.http.post("/auth/login", data={"_xsrf": person.http.cookies["_xsrf"],
                                                    "username": user.username,
                                                    "password": user.password}).status_code == 400


def test_picker_refuses_a_patient_the_user_may_not_act_for(ehr: RunningEHR) -> None:
    caregiver = next(u for u in ehr.plan.users if len(u.patient_ids) > 1)
    other = next(p.id for p in ehr.plan.patients if p.id not in caregiver.patient_ids)
    person, _, _ = start(ehr)
    with person:
        person.login(caregiver.username, caregiver.password)
        r = person.submit({"patient": other})
        assert r.status_code == 400 and r.request.url.path == "/auth/patient"
        assert person.http.get("/auth/consent").headers["location"] == "/auth/patient"


def test_tampered_consent_never_grants_more_than_requested(ehr: RunningEHR) -> None:
    user = user_with_one_patient(ehr)
    person, params, verifier = start(ehr, scope="launch/patient patient/Observation.rs")
    with person:
        person.login(user.username, user.password)
        r = person.submit({"approve": "approve",
                           "scope": ["launch/patient", "patient/Observation.rs", "patient/*.rs", "user/*.rs",
                                     "offline_access"]})
    code = callback_params(r.headers["location"])["code"]
    body = exchange(ehr, code, verifier, params).json()
    assert body["scope"] == "launch/patient patient/Observation.rs" and "refresh_token" not in body


def test_nothing_ticked_means_access_denied(ehr: RunningEHR) -> None:
    user = user_with_one_patient(ehr)
    person, params, _ = start(ehr)
    with person:
        person.login(user.username, user.password)
        r = person.submit({"approve": "approve"})
    got = callback_params(r.headers["location"])
    assert got["error"] == "access_denied" and got["state"] == params["state"]


def test_a_decision_is_made_once(ehr: RunningEHR) -> None:
    user = user_with_one_patient(ehr)
    person, _, _ = start(ehr)
    with person:
        page = person.login(user.username, user.password)
        form = parse_form(page.text)
        decision = {**form.hidden, "approve": "approve", "scope": "patient/*.rs"}
        first = person.http.post(form.action, data=decision)
        assert first.status_code == 303
        again = person.http.post(form.action, data=decision)
        assert again.status_code == 400 and "location" not in again.headers


def test_pages_without_a_started_request_explain_and_stop(ehr: RunningEHR) -> None:
    with PageUser(ehr.url) as person:
        for path in ("/auth/login", "/auth/patient", "/auth/consent"):
            r = person.http.get(path)
            assert r.status_code == 400 and "start again" in r.text
