"""Completing a login without a person: drive an EHR's real pages as a browser would.

:class:`FormLogin` is a ``browser=`` callable for :meth:`Session.login`: given the authorize URL, it walks
the EHR's HTML forms with httpx (cookies, hidden fields such as the XSRF token, redirects), fills the login
form (``username``/``password``), the patient picker (``patient``) and the consent form (one ``scope``
checkbox per scope; ``approve`` or ``deny``), the field names of this project's EHR contract
(``docs/ehr-auth.md``). Tests and the notebooks' CI use it; so can any script against an EHR with the same
field names. With an EHR started with ``--auto-approve`` no callable is needed at all.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

from s4s_jupyter.core.errors import ClientError


@dataclass
class Form:
    """One HTML form: where it posts and its controls (name, type, value, checked)."""

    action: str
    method: str = "get"
    controls: list[dict[str, Any]] = field(default_factory=list)

    def names(self) -> set[str]:
        return {c["name"] for c in self.controls if c.get("name")}


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a: dict[str, Any] = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif tag in ("input", "button") and self.forms:
            a.setdefault("type", "submit" if tag == "button" else "text")
            a["checked"] = "checked" in {k for k, _ in attrs}
            self.forms[-1].controls.append(a)

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


def parse_forms(html: str) -> tuple[list[Form], str]:
    """The forms of a page, and its visible text (for error messages)."""
    parser = _FormParser()
    parser.feed(html)
    return parser.forms, " ".join(parser.text)


@dataclass
class FormLogin:
    """Sign in at the EHR's pages: ``username``/``password``, then ``patient`` (default: the pre-selected
    one), then consent to ``scopes`` (default: every requested scope) or deny (``approve=False``).

    ``follow_callback``: GET the final redirect (so a :class:`LoopbackRedirect` receives it, as from a
    real browser) and return None; else return the redirect URL without visiting it.
    """

    username: str
    password: str = field(repr=False)
    patient: str | None = None
    scopes: Collection[str] | None = None
    approve: bool = True
    follow_callback: bool = True
    timeout: float = 30.0

    def __call__(self, authorize_url: str) -> str | None:
        import httpx

        redirect_uri = (parse_qs(urlsplit(authorize_url).query).get("redirect_uri") or [""])[0]
        if not redirect_uri:
            raise ClientError("the authorize URL has no redirect_uri", status=400)
        with httpx.Client(follow_redirects=False, timeout=self.timeout) as http:
            method, url, data = "GET", authorize_url, None
            for _ in range(20):
                response = http.request(method, url, data=data)
                if response.is_redirect:
                    location = urljoin(url, response.headers["Location"])
                    if location.split("?", 1)[0] == redirect_uri.split("?", 1)[0]:
                        if not self.follow_callback:
                            return location
                        httpx.get(location, timeout=self.timeout)
                        return None
                    method, url, data = "GET", location, None
                    continue
                forms, text = parse_forms(response.text)
                if not forms:
                    raise ClientError(f"the EHR answered {response.status_code} without a form: {text[:300]}",
                                      status=response.status_code)
                if response.status_code >= 400:
                    raise ClientError(f"the EHR refused the sign-in ({response.status_code}): {text[:300]}",
                                      status=response.status_code)
                form = forms[0]
                method, data = form.method.upper(), self._fill(form)
                url = urljoin(str(response.url), form.action)
        raise ClientError("the EHR's pages did not reach the redirect within 20 steps", status=400)

    def _fill(self, form: Form) -> dict[str, Any]:
        data: dict[str, Any] = {}
        names = form.names()
        for c in form.controls:
            name, ctype = c.get("name"), c.get("type", "text").lower()
            if not name or ctype in ("submit", "button"):
                continue
            if ctype == "hidden":
                data[name] = c.get("value", "")
        if "username" in names:
            data.update(username=self.username, password=self.password)
        elif "patient" in names:
            options = [c for c in form.controls if c.get("name") == "patient"]
            chosen = self.patient or next((c["value"] for c in options if c["checked"]), options[0]["value"])
            data["patient"] = chosen
        elif "scope" in names or "approve" in names:
            offered = [c["value"] for c in form.controls if c.get("name") == "scope"]
            data["scope"] = [s for s in offered if self.scopes is None or s in self.scopes]
            data["approve" if self.approve else "deny"] = "approve" if self.approve else "deny"
        else:
            raise ClientError(f"unexpected form at the EHR (fields {sorted(names)})", status=400)
        return data
