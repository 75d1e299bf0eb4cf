"""A user agent that drives the EHR's real sign-in pages over HTTP (httpx), by the contract's field names.

It reads each page's form (action, hidden inputs, checkboxes) with the standard library's HTML parser,
so a page that lost a field or its XSRF token fails the test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from s4s_jupyter.core.pkce import make_verifier, s256_challenge


@dataclass
class Form:
    action: str = ""
    hidden: dict[str, str] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)
    checkboxes: list[tuple[str, str, bool]] = field(default_factory=list)  # name, value, checked
    radios: list[tuple[str, str]] = field(default_factory=list)
    buttons: list[str] = field(default_factory=list)


class FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(action=a.get("action", "")))
        elif not self.forms:
            return
        elif tag == "input":
            kind = a.get("type", "text")
            if kind == "hidden":
                self.forms[-1].hidden[a["name"]] = a.get("value", "")
            elif kind == "checkbox":
                self.forms[-1].checkboxes.append((a["name"], a.get("value", ""), "checked" in a))
            elif kind == "radio":
                self.forms[-1].radios.append((a["name"], a.get("value", "")))
            else:
                self.forms[-1].fields.append(a.get("name", ""))
        elif tag == "button" and a.get("name"):
            self.forms[-1].buttons.append(a["name"])


def parse_form(html: str) -> Form:
    parser = FormParser()
    parser.feed(html)
    assert len(parser.forms) == 1, "expected exactly one form on the page"
    return parser.forms[0]


def launch_params(ehr_url: str, *, client_id: str | None = "s4s-jupyter",
                  redirect_uri: str | None = "http://127.0.0.1:8765/callback",
                  scope: str | None = "launch/patient openid fhirUser offline_access patient/*.rs",
                  **extra: str | None) -> tuple[dict[str, str], str]:
    """Standalone-launch authorize parameters and their PKCE verifier. ``extra`` overrides (None drops)."""
    verifier = make_verifier()
    params: dict[str, Any] = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
        "state": make_verifier(12), "aud": ehr_url + "/fhir", "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256", "nonce": make_verifier(8),
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}, verifier


class PageUser:
    """A person at a browser, signing in at the EHR."""

    def __init__(self, ehr_url: str) -> None:
        self.ehr_url = ehr_url
        self.http = httpx.Client(base_url=ehr_url, follow_redirects=False, timeout=10)
        self.page: httpx.Response | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> PageUser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def go(self, response: httpx.Response) -> httpx.Response:
        """Follow redirects inside the EHR; stop at a page or at a redirect leaving the EHR."""
        while response.status_code in (302, 303) and not self.leaves(response):
            response = self.http.get(response.headers["location"])
        self.page = response
        return response

    def leaves(self, response: httpx.Response) -> bool:
        target = urljoin(self.ehr_url + "/", response.headers.get("location", ""))
        return urlsplit(target).netloc != urlsplit(self.ehr_url).netloc

    def open(self, url: str, params: dict[str, str] | None = None) -> httpx.Response:
        return self.go(self.http.get(url, params=params))

    def submit(self, data: dict[str, Any], *, xsrf: bool = True) -> httpx.Response:
        assert self.page is not None
        form = parse_form(self.page.text)
        body = dict(form.hidden) if xsrf else {}
        body.update(data)
        return self.go(self.http.post(form.action, data=body))

    def login(self, username: str, password: str) -> httpx.Response:
        assert self.page is not None
        assert {"username", "password"} <= set(parse_form(self.page.text).fields)
        return self.submit({"username": username, "password": password})

    def pick(self, patient: str) -> httpx.Response:
        assert self.page is not None
        assert ("patient", patient) in parse_form(self.page.text).radios
        return self.submit({"patient": patient})

    def consent_scopes(self) -> list[str]:
        assert self.page is not None
        form = parse_form(self.page.text)
        assert {"approve", "deny"} <= set(form.buttons)
        assert all(name == "scope" and checked for name, _, checked in form.checkboxes)
        return [value for _, value, _ in form.checkboxes]

    def decide(self, *, approve: bool = True, scopes: list[str] | None = None) -> httpx.Response:
        chosen = self.consent_scopes() if scopes is None else scopes
        button = {"approve": "approve"} if approve else {"deny": "deny"}
        return self.submit({**button, "scope": chosen})

    def authorize(self, authorize_url: str, params: dict[str, str] | None, username: str, password: str,
                  *, patient: str | None = None, scopes: list[str] | None = None,
                  approve: bool = True) -> str:
        """The whole interaction; returns the redirect URI with ``code`` and ``state`` (or ``error``)."""
        page = self.open(authorize_url, params)
        assert page.request.url.path == "/auth/login", page.text
        page = self.login(username, password)
        if page.request.url.path == "/auth/patient":
            assert patient is not None, "the picker appeared: say which patient"
            page = self.pick(patient)
        assert page.request.url.path == "/auth/consent", page.text
        response = self.decide(approve=approve, scopes=scopes)
        # a 303 after the consent form's POST, never 307 (RFC 9700 4.12)
        assert response.status_code == 303 and self.leaves(response), response.text
        return response.headers["location"]


def callback_params(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
