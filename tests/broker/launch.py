"""Obtaining real access tokens from the EHR under test: a standalone launch driven over HTTP (httpx)
through the real login, patient picker and consent pages, by the contract's field names (username,
password, patient, scope, approve), then the token exchange with PKCE."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from s4s_jupyter.core.pkce import make_verifier, s256_challenge

KIT_CLIENT = "s4s-jupyter"
REDIRECT_URI = "http://127.0.0.1:8765/callback"
SCOPE = "launch/patient openid fhirUser patient/*.rs"


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.hidden: dict[str, str] = {}
        self.scopes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = a.get("action", "")
        elif tag == "input" and a.get("type") == "hidden":
            self.hidden[a["name"]] = a.get("value", "")
        elif tag == "input" and a.get("type") == "checkbox" and a.get("name") == "scope":
            self.scopes.append(a.get("value", ""))


def _form(html: str) -> _Form:
    f = _Form()
    f.feed(html)
    return f


def launch(ehr_url: str, username: str, password: str, patient: str | None = None, *,
           scope: str = SCOPE) -> dict[str, Any]:
    """A standalone launch at ``ehr_url`` (the EHR's root URL); returns the token response."""
    verifier = make_verifier()
    state = make_verifier(12)
    params = {"response_type": "code", "client_id": KIT_CLIENT, "redirect_uri": REDIRECT_URI,
              "scope": scope, "state": state, "aud": ehr_url + "/fhir",
              "code_challenge": s256_challenge(verifier), "code_challenge_method": "S256"}
    with httpx.Client(base_url=ehr_url, follow_redirects=False, timeout=30) as http:
        r = http.get("/auth/authorize", params=params)

        def follow(r: httpx.Response) -> httpx.Response:
            while r.status_code in (302, 303) and not r.headers["location"].startswith(REDIRECT_URI):
                r = http.get(urljoin(str(r.url), r.headers["location"]))
            return r

        def submit(r: httpx.Response, data: dict[str, Any]) -> httpx.Response:
            form = _form(r.text)
            return follow(http.post(urljoin(str(r.url), form.action), data={**form.hidden, **data}))

        r = follow(r)
        r = submit(r, {"username": username, "password": password})
        if urlsplit(str(r.url)).path.endswith("/patient"):
            assert patient, "the patient picker appeared"
            r = submit(r, {"patient": patient})
        scopes = _form(r.text).scopes
        r = submit(r, {"approve": "approve", "scope": scopes})
        assert r.status_code in (302, 303), r.text[:500]
        query = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
        assert query.get("state") == state, query
        token = http.post("/auth/token", data={
            "grant_type": "authorization_code", "code": query["code"], "redirect_uri": REDIRECT_URI,
            "client_id": KIT_CLIENT, "code_verifier": verifier})
        assert token.status_code == 200, token.text
        data: dict[str, Any] = token.json()
        return data
