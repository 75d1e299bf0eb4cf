"""The sign-in throttle (servers/ehr/oauth/throttle.py) through the real login page, over HTTP (httpx):
per account and per client address, across authorization requests, decaying with the EHR's clock,
reset by a success, kept in the EHR's SQLite file, and not outrun by concurrent guesses."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from servers.ehr.app import make_app
from servers.ehr.oauth.throttle import LoginThrottle
from servers.runtime import ServerLoop
from tests.ehr.conftest import RunningEHR

from .browserless import PageUser, callback_params, launch_params, parse_form
from .helpers import user_with_one_patient

REFUSED = "Too many failed sign-ins for this account or from this address"


def without_xsrf(html: str) -> str:
    return re.sub(r'name="_xsrf" value="[^"]*"', "", html)


def login_page(ehr_url: str) -> PageUser:
    """A fresh authorization request (new pending request, new cookies), at the login page."""
    params, _ = launch_params(ehr_url)
    person = PageUser(ehr_url)
    page = person.open("/auth/authorize", params)
    assert page.request.url.path == "/auth/login", page.text
    return person


def try_login(ehr_url: str, username: str, password: str) -> httpx.Response:
    with login_page(ehr_url) as person:
        return person.login(username, password)


@pytest.fixture
def throttled(start_ehr: Callable[..., RunningEHR]) -> RunningEHR:
    return start_ehr(login_account_failures=3, login_address_failures=50, login_failure_window=300)


def test_account_is_refused_after_n_failures_across_requests(throttled: RunningEHR) -> None:
    ehr = throttled
    user = user_with_one_patient(ehr)
    for _ in range(3):  # each in a new authorization request: the per-request limit never applies
        r = try_login(ehr.url, user.username, "guess")
        assert r.status_code == 401 and "wrong password" in r.text.lower()
    wrong = try_login(ehr.url, user.username, "guess")
    right = try_login(ehr.url, user.username, user.password)
    # refused either way, with the same answer: nothing tells whether the password was right
    for r in (wrong, right):
        assert r.status_code == 429 and REFUSED in r.text and "wrong password" not in r.text.lower()
        assert int(r.headers["Retry-After"]) == 100  # window / limit: one more attempt after 100 s
        assert r.headers["Cache-Control"] == "no-store"
        assert {"username", "password"} <= set(parse_form(r.text).fields)  # the user may retry later
    assert without_xsrf(wrong.text) == without_xsrf(right.text)
    # the same name in another case is the same account; another account from here is untouched
    assert try_login(ehr.url, user.username.upper(), "guess").status_code == 429
    other = next(u for u in ehr.plan.users if u.username != user.username and u.patient_ids)
    with login_page(ehr.url) as person:
        assert person.login(other.username, other.password).request.url.path in ("/auth/consent",
                                                                                  "/auth/patient")

    # failures decay: after window/limit seconds one attempt is allowed again
    ehr.clock.advance(99)
    assert try_login(ehr.url, user.username, user.password).status_code == 429
    ehr.clock.advance(2)
    with login_page(ehr.url) as person:
        page = person.login(user.username, user.password)
        assert page.request.url.path == "/auth/consent", page.text
        location = person.decide().headers["location"]
        assert "code" in callback_params(location)
    # the success reset the account: a full allowance of failures again
    for _ in range(3):
        assert try_login(ehr.url, user.username, "guess").status_code == 401
    assert try_login(ehr.url, user.username, "guess").status_code == 429
    ehr.clock.advance(300)  # a whole window: everything drained
    for _ in range(3):
        assert try_login(ehr.url, user.username, "guess").status_code == 401


def test_unknown_accounts_are_throttled_the_same(throttled: RunningEHR) -> None:
    for _ in range(3):
        assert try_login(throttled.url, "nobody-here", "guess").status_code == 401
    r = try_login(throttled.url, "nobody-here", "guess")
    assert r.status_code == 429 and REFUSED in r.text


def test_one_address_spraying_many_accounts_is_refused(start_ehr: Callable[..., RunningEHR]) -> None:
    ehr = start_ehr(login_account_failures=10, login_address_failures=4, login_failure_window=400)
    user = user_with_one_patient(ehr)
    for i in range(4):
        assert try_login(ehr.url, f"someone-{i}", "guess").status_code == 401
    # every account, even with its right password, is refused from this address now
    r = try_login(ehr.url, user.username, user.password)
    assert r.status_code == 429 and REFUSED in r.text
    ehr.clock.advance(100)  # window / limit
    assert try_login(ehr.url, user.username, user.password).request.url.path == "/auth/consent"
    # a success refunds its own attempt but does not clear the address's failures
    assert try_login(ehr.url, "someone-9", "guess").status_code == 401
    assert try_login(ehr.url, "someone-10", "guess").status_code == 429


def test_throttle_survives_a_restart(throttled: RunningEHR, server_loop: ServerLoop) -> None:
    ehr = throttled
    user = user_with_one_patient(ehr)
    for _ in range(3):
        assert try_login(ehr.url, user.username, "guess").status_code == 401
    # a new EHR process over the same data folder (same SQLite file) still refuses
    again = server_loop.serve(lambda url: make_app(ehr.settings, url))
    assert try_login(again.url, user.username, user.password).status_code == 429


def test_concurrent_guesses_cannot_outrun_the_throttle(throttled: RunningEHR,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ehr = throttled
    user = user_with_one_patient(ehr)
    people = [login_page(ehr.url) for _ in range(12)]
    # count the passwords the EHR really verifies (the real check runs; only counted)
    store = ehr.services.store
    real_check = store.authenticate_user
    checked: list[str] = []

    def counted(username: str, password: str) -> Any:
        checked.append(username)
        return real_check(username, password)

    monkeypatch.setattr(store, "authenticate_user", counted)

    async def guess(person: PageUser) -> int:
        assert person.page is not None
        form = parse_form(person.page.text)
        async with httpx.AsyncClient(base_url=ehr.url, cookies=person.http.cookies, timeout=30) as http:
            r = await http.post(form.action, data={**form.hidden, "username": user.username,
                                                   "password": "guess"})
            return r.status_code

    async def all_at_once() -> list[int]:
        return await asyncio.gather(*(guess(p) for p in people))

    try:
        statuses = asyncio.run(all_at_once())
    finally:
        for p in people:
            p.close()
    assert sorted(statuses) == [401] * 3 + [429] * 9
    assert checked == [user.username] * 3  # the refused nine never reached the password check


def test_throttle_levels_decay_linearly(tmp_path: Any) -> None:
    now = [1000.0]
    throttle = LoginThrottle(tmp_path / "t.sqlite", lambda: now[0], account_limit=2, address_limit=50,
                             window=60)
    try:
        assert throttle.attempt("a", "10.0.0.1") is None and throttle.attempt("a", "10.0.0.1") is None
        assert throttle.attempt("a", "10.0.0.1") == 30
        now[0] += 15
        assert throttle.attempt("a", "10.0.0.1") == 15
        now[0] += 15
        assert throttle.attempt("a", "10.0.0.1") is None  # one slot drained
        assert throttle.attempt("a", "10.0.0.1") == 30
        throttle.succeeded("a", "10.0.0.1")
        assert throttle.attempt("a", "10.0.0.1") is None
        with pytest.raises(ValueError):
            LoginThrottle(tmp_path / "t.sqlite", account_limit=0)
    finally:
        throttle.close()
