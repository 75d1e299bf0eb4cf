"""RFC 9207: the EHR names itself (``iss``) in every authorization response and advertises it; the kit's
loopback login compares it with the issuer discovered before the request and refuses a forged or
missing one (RFC 9700 4.4, mix-up attacks), before the code is ever sent to a token endpoint."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest

import s4s_jupyter as s4s
from s4s_jupyter.client import launch
from s4s_jupyter.client.discovery import SmartConfiguration
from s4s_jupyter.client.launch import IssuerMismatch


def user(stack: dict[str, Any], username: str) -> dict[str, Any]:
    return next(u for u in stack["users"] if u["username"] == username)


def with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def tampering(stack: dict[str, Any], seen: list[str], **changes: str | None) -> launch.Browser:
    """The real pages up to the EHR's redirect, which is then altered the way an attacker's AS would."""
    maya = user(stack, "maya1")
    pages = s4s.FormLogin(maya["username"], maya["password"], follow_callback=False)

    def browser(url: str) -> str:
        redirect = pages(url)
        assert redirect is not None
        seen.append(redirect)
        return with_query(redirect, **changes)
    return browser


def test_the_ehr_advertises_and_sends_its_issuer(stack: dict[str, Any]) -> None:
    seen: list[str] = []
    with s4s.connect(stack["ehr_fhir"], login=False, token_store=False) as ehr:
        assert ehr.config.authorization_response_iss_parameter_supported is True
        ehr.login(browser=tampering(stack, seen))  # nothing changed: accepted
        assert ehr.logged_in
        assert parse_qs(urlsplit(seen[0]).query)["iss"] == [ehr.config.issuer]


@pytest.mark.parametrize("iss", ["https://attacker.example/fhir", "{ehr}/", "{ehr}/other"])
def test_a_forged_iss_is_refused_and_its_code_not_used(stack: dict[str, Any], iss: str) -> None:
    seen: list[str] = []
    with s4s.connect(stack["ehr_fhir"], login=False, token_store=False) as ehr:
        forged = iss.format(ehr=stack["ehr_fhir"])
        with pytest.raises(IssuerMismatch, match="mix-up") as caught:
            ehr.login(browser=tampering(stack, seen, iss=forged))
        assert caught.value.error == "invalid_issuer"
        assert not ehr.logged_in
    assert "code=" in seen[0]  # a real code came back; the kit refused the response around it


def test_a_missing_iss_is_refused_when_the_server_promised_it(stack: dict[str, Any]) -> None:
    seen: list[str] = []
    with s4s.connect(stack["ehr_fhir"], login=False, token_store=False) as ehr:
        with pytest.raises(IssuerMismatch, match="lacks the iss"):
            ehr.login(browser=tampering(stack, seen, iss=None))
        assert not ehr.logged_in


def test_an_error_response_from_another_issuer_is_not_believed(stack: dict[str, Any]) -> None:
    maya = user(stack, "maya1")
    pages = s4s.FormLogin(maya["username"], maya["password"], follow_callback=False, approve=False)
    with s4s.connect(stack["ehr_fhir"], login=False, token_store=False) as ehr:
        def browser(url: str) -> str:
            redirect = pages(url)
            assert redirect is not None and "error=access_denied" in redirect
            return with_query(redirect, iss="https://attacker.example")
        with pytest.raises(IssuerMismatch):
            ehr.login(browser=browser)


def test_servers_without_rfc_9207_still_work_without_iss() -> None:
    """A server that neither advertises nor sends ``iss`` (most SMART EHRs today): accepted; one that sends
    an ``iss`` without publishing an ``issuer`` to compare it with: refused (fail closed)."""
    old = SmartConfiguration.from_json({"authorization_endpoint": "https://ehr.example/authorize",
                                        "token_endpoint": "https://ehr.example/token"})
    request = launch.authorization_request(old, "app", "http://127.0.0.1:1/callback", "openid",
                                           "https://ehr.example/fhir")
    assert not request.iss_required and request.issuer is None
    assert launch.parse_redirect(request, f"http://127.0.0.1:1/callback?code=c&state={request.state}") == "c"
    with pytest.raises(IssuerMismatch, match="names none"):
        launch.parse_redirect(request, f"http://127.0.0.1:1/callback?code=c&state={request.state}"
                                       "&iss=https%3A%2F%2Fehr.example")
    twice = launch.authorization_request(
        SmartConfiguration.from_json({**old.to_json(), "issuer": "https://ehr.example",
                                      "authorization_response_iss_parameter_supported": True}),
        "app", "http://127.0.0.1:1/callback", "openid", "https://ehr.example/fhir")
    with pytest.raises(IssuerMismatch, match="more than once"):
        launch.parse_redirect(twice, f"http://127.0.0.1:1/callback?code=c&state={twice.state}"
                                     "&iss=https%3A%2F%2Fehr.example&iss=https%3A%2F%2Fehr.example")


def test_the_loopback_page_says_the_response_was_refused(stack: dict[str, Any]) -> None:
    """The browser lands on the loopback listener with a forged ``iss``: the page it shows says the sign-in
    was refused (400), and the session raises; the genuine response gets the usual page."""
    maya = user(stack, "maya1")
    pages: list[httpx.Response] = []

    def browser(forge: bool) -> launch.Browser:
        def visit(url: str) -> None:
            redirect = s4s.FormLogin(maya["username"], maya["password"], follow_callback=False)(url)
            assert redirect is not None
            forged = with_query(redirect, iss="https://attacker.example")
            pages.append(httpx.get(forged if forge else redirect))
        return visit

    with s4s.connect(stack["ehr_fhir"], login=False, token_store=False) as ehr:
        with pytest.raises(IssuerMismatch):
            ehr.login(browser=browser(True))
        assert pages[0].status_code == 400 and "Sign-in refused" in pages[0].text
        assert "mix-up" in pages[0].text
        assert pages[0].headers["Cache-Control"] == "no-store"
        ehr.login(browser=browser(False))
        assert pages[1].status_code == 200 and "Signed in" in pages[1].text and ehr.logged_in
