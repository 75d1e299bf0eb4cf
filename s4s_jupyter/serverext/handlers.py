"""HTTP handlers of the server extension, under the server's ``base_url``: parse, call
:class:`~s4s_jupyter.serverext.logins.SmartLogins`, write.

``GET {base}/s4s/login``           start a SMART standalone launch (redirect to the EHR's authorize URL)
``GET {base}/s4s/oauth/callback``  the redirect URI: state first, then the code exchange, then a page
``GET {base}/s4s/api/status``      JSON: logged in, patient, scopes, expiry (never a token)
``POST {base}/s4s/api/logout``     revoke at the EHR and forget (XSRF-protected like every Jupyter POST)

All of them require Jupyter's own authentication (``@web.authenticated``; jupyter_server's
IdentityProvider: token or login cookie). jupyter_server checks the XSRF token on every request that is
not a GET/HEAD/OPTIONS and is not token-authenticated; the GETs here change no state the user did not ask
for at the EHR. Every answer carries ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer``
(the callback's URL holds the code and state; jupyter_server's access log scrubs both).
"""

from __future__ import annotations

import asyncio
import json
from html import escape
from typing import Any

import httpx
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from s4s_jupyter.client.launch import IssuerMismatch
from s4s_jupyter.core.errors import ClientError, OAuthError, S4SError
from s4s_jupyter.serverext.logins import ClientRegistration, SmartLogins

CALLBACK_PATH = "s4s/oauth/callback"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;line-height:1.5}}
.ok{{color:#17622a}} .error{{color:#a40e26}} code{{background:#f4f4f4;padding:0 .2em}}</style></head>
<body><h1 class="{cls}" data-s4s-login="{outcome}">{title}</h1>{body}</body></html>
"""


def _page(outcome: str, title: str, body: str) -> str:
    return _PAGE.format(title=escape(title), cls="ok" if outcome == "ok" else "error", outcome=outcome,
                        body=body)


class _S4SMixin:
    """Shared initialisation and headers."""

    logins: SmartLogins
    redirect_uri_override: str

    def initialize(self, logins: SmartLogins, redirect_uri: str = "") -> None:
        self.logins = logins
        self.redirect_uri_override = redirect_uri

    def _no_store(self) -> None:
        handler: Any = self
        handler.set_header("Cache-Control", "no-store")
        handler.set_header("Pragma", "no-cache")
        handler.set_header("Referrer-Policy", "no-referrer")

    def _user(self) -> str:
        user: Any = getattr(self, "current_user", None)
        return str(getattr(user, "username", None) or user)

    def _registration(self) -> ClientRegistration:
        handler: Any = self
        return self.logins.registration(handler.get_argument("ehr", None) or None,
                                        handler.get_argument("client_id", None) or None)


class _PageHandler(_S4SMixin, JupyterHandler):
    def set_default_headers(self) -> None:
        super().set_default_headers()
        self._no_store()

    def _error_page(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(_page("error", "SMART login failed", f"<p>{escape(message)}</p>"
                          "<p>Start the login again from your notebook.</p>"))


class LoginHandler(_PageHandler):
    """Start a login: a fresh state and PKCE verifier kept here, the browser sent to the EHR."""

    @web.authenticated
    async def get(self) -> None:
        try:
            registration = self._registration()
            scope = self.get_argument("scope", None) or None
            redirect_uri = self.redirect_uri_override or (
                f"{self.request.protocol}://{self.request.host}{url_path_join(self.base_url, CALLBACK_PATH)}")
            url = await asyncio.to_thread(self.logins.start, registration, redirect_uri, self._user(), scope)
        except S4SError as exc:
            self._error_page(exc.status if 400 <= exc.status < 600 else 502, exc.message)
            return
        except httpx.HTTPError as exc:
            self._error_page(502, f"the EHR could not be reached ({type(exc).__name__})")
            return
        self.redirect(url)


class CallbackHandler(_PageHandler):
    """The OAuth redirect URI (RFC 6749 4.1.2). ``state`` is checked before anything else is read."""

    def get_login_url(self) -> str:
        # Without Jupyter's cookie, @web.authenticated would redirect to the login page with
        # next=<this URL>, putting the code and state into another URL (and its log line). Refuse instead.
        raise web.HTTPError(403, "not signed in to Jupyter in this browser")

    @web.authenticated
    async def get(self) -> None:
        try:
            pending = self.logins.pending.take(self.get_query_argument("state", None), self._user())
        except OAuthError as exc:
            self._error_page(exc.status, exc.message)
            return
        query = {name: self.get_query_argument(name) for name in self.request.query_arguments}
        try:
            tokens = await asyncio.to_thread(self.logins.finish, pending, query)
        except IssuerMismatch as exc:  # not the EHR's answer: say so, do not blame the EHR
            self._error_page(400, f"the authorization response was refused: {exc.message}")
            return
        except OAuthError as exc:
            self._error_page(400, f"the EHR answered {exc.error}: {exc.message}")
            return
        except ClientError as exc:
            self._error_page(502, f"the token exchange failed: {exc.message}")
            return
        except httpx.HTTPError as exc:
            self._error_page(502, f"the EHR could not be reached ({type(exc).__name__})")
            return
        patient = escape(tokens.patient or "(none)")
        scopes = " ".join(f"<code>{escape(s)}</code>" for s in tokens.scopes)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(_page("ok", "Signed in", (
            f"<p>Signed in at <code>{escape(pending.registration.ehr)}</code> for patient "
            f"<code data-s4s-patient>{patient}</code>.</p><p>Scopes: {scopes}</p>"
            "<p>You can close this tab and go back to your notebook.</p>")))


class _APIBase(_S4SMixin, APIHandler):
    def set_default_headers(self) -> None:
        super().set_default_headers()
        self._no_store()

    def _json(self, body: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def _oauth_error(self, exc: OAuthError) -> None:
        self._json(exc.body(), exc.status)


class StatusHandler(_APIBase):
    """``GET {base}/s4s/api/status[?ehr=&client_id=]``."""

    @web.authenticated
    async def get(self) -> None:
        try:
            registration = self._registration()
        except OAuthError as exc:
            self._oauth_error(exc)
            return
        body = await asyncio.to_thread(self.logins.status, registration)
        body["login_url"] = url_path_join(self.base_url, "s4s/login")
        self._json(body)


class LogoutHandler(_APIBase):
    """``POST {base}/s4s/api/logout`` (form or JSON body with optional ``ehr``, ``client_id``)."""

    def _body_arguments(self) -> tuple[str | None, str | None]:
        if self.request.headers.get("Content-Type", "").startswith("application/json") and self.request.body:
            try:
                body = json.loads(self.request.body)
            except ValueError as exc:
                raise OAuthError("the body is not JSON") from exc
            if not isinstance(body, dict):
                raise OAuthError("the body is not a JSON object")
            return body.get("ehr") or None, body.get("client_id") or None
        return self.get_argument("ehr", None) or None, self.get_argument("client_id", None) or None

    @web.authenticated
    async def post(self) -> None:
        try:
            registration = self.logins.registration(*self._body_arguments())
        except OAuthError as exc:
            self._oauth_error(exc)
            return
        try:
            body = await asyncio.to_thread(self.logins.logout, registration)
        except (S4SError, httpx.HTTPError) as exc:
            self._json({"logged_out": True, "revoked": False, "error": "revocation_failed",
                        "error_description": getattr(exc, "message", type(exc).__name__)}, 502)
            return
        self._json(body)


def handlers(logins: SmartLogins, redirect_uri: str = "") -> list[tuple[str, type, dict[str, Any]]]:
    """The extension's routes (relative; the ExtensionApp prepends ``base_url``)."""
    kwargs = {"logins": logins, "redirect_uri": redirect_uri}
    return [
        (r"/s4s/login", LoginHandler, kwargs),
        (r"/" + CALLBACK_PATH, CallbackHandler, kwargs),
        (r"/s4s/api/status", StatusHandler, kwargs),
        (r"/s4s/api/logout", LogoutHandler, kwargs),
    ]
