"""SMART standalone launch: authorization code grant with PKCE (SMART App Launch 2.x; RFC 6749 4.1;
RFC 7636), for a native app (RFC 8252).

The pieces, in the order of a login:

1. :func:`authorization_request` builds the authorize URL with a fresh ``state`` and PKCE S256 pair.
2. The user's browser visits it; the EHR redirects to ``redirect_uri`` with ``code`` and ``state``.
   Who catches that redirect is a :class:`RedirectReceiver`: :class:`LoopbackRedirect` (a one-shot HTTP
   listener on ``127.0.0.1`` and a random port, RFC 8252 7.3), or the Jupyter server extension.
3. :func:`parse_redirect` checks ``state`` (constant time) and the RFC 9207 ``iss`` (the mix-up defence of
   RFC 9700 4.4), and turns an ``error`` into :class:`OAuthError`.
4. :func:`exchange_code` trades the code and ``code_verifier`` for a :class:`TokenSet`.

:func:`refresh_tokens` and :func:`revoke_token` are the other two token endpoint calls.
"""

from __future__ import annotations

import hmac
import http.server
import os
import secrets
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

from s4s_jupyter.client.discovery import SmartConfiguration
from s4s_jupyter.client.tokens import TokenSet
from s4s_jupyter.core.errors import ClientError, OAuthError
from s4s_jupyter.core.pkce import make_verifier, s256_challenge

if TYPE_CHECKING:
    import httpx

#: ``browser(authorize_url)``: shows the URL to the user (or drives the pages itself). It may return the
#: final redirect URL (with ``code`` and ``state``) when it caught it; None means "wait for the receiver".
Browser = Callable[[str], "str | None"]


@dataclass(frozen=True)
class ClientCredentials:
    """The app's registration at the EHR: a public client has no secret (PKCE only); a confidential one
    authenticates at the token endpoint with HTTP Basic (``client_secret_basic``, RFC 6749 2.3.1)."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)

    def apply(self, form: dict[str, str]) -> tuple[dict[str, str], tuple[str, str] | None]:
        """The form and the Basic credentials of a token endpoint request."""
        if self.client_secret:
            return form, (self.client_id, self.client_secret)
        return {**form, "client_id": self.client_id}, None


@dataclass(frozen=True)
class AuthorizationRequest:
    """One authorization request and the secrets that belong to it (never shown in ``repr``)."""

    url: str
    redirect_uri: str
    scope: str
    state: str = field(repr=False)
    code_verifier: str = field(repr=False)
    #: the ``issuer`` of the server's discovery document, and whether it promised ``iss`` in every
    #: authorization response (RFC 9207 2.4: what :func:`parse_redirect` compares the response with)
    issuer: str | None = None
    iss_required: bool = False


class IssuerMismatch(OAuthError):
    """An authorization response whose ``iss`` is not the issuer the request went to, or lacks the ``iss``
    the server promised (RFC 9207 2.4; RFC 9700 4.4, mix-up attacks): refused, its code never used."""

    error = "invalid_issuer"
    status = 400


#: authorize parameters the kit sets itself (RFC 6749 4.1.1, RFC 7636 4.3, SMART App Launch 2.x
#: "Authorization request"): :func:`authorization_request` refuses them in ``extra``
KIT_AUTHORIZE_PARAMS = frozenset({"response_type", "client_id", "redirect_uri", "scope", "state", "aud",
                                  "code_challenge", "code_challenge_method", "launch"})


def check_authorize_params(extra: Mapping[str, str] | None) -> dict[str, str]:
    """``extra`` as a plain dict of strings; :class:`ValueError` for a parameter the kit owns (it would
    break the login or its protections: ``state``, PKCE, ``aud``, ...) or a value that is not a string."""
    out: dict[str, str] = {}
    for name, value in (extra or {}).items():
        if name in KIT_AUTHORIZE_PARAMS:
            hint = " (use launch_context=)" if name == "launch" else ""
            raise ValueError(f"authorize parameter {name!r} is set by the kit and cannot be overridden"
                             f"{hint}; the kit owns {', '.join(sorted(KIT_AUTHORIZE_PARAMS))}")
        if not isinstance(name, str) or not name or not isinstance(value, str):
            raise ValueError(f"authorize parameters are names and string values; got {name!r}={value!r}")
        out[name] = value
    return out


def authorization_request(config: SmartConfiguration, client_id: str, redirect_uri: str, scope: str,
                          aud: str, *, launch: str | None = None,
                          extra: Mapping[str, str] | None = None) -> AuthorizationRequest:
    """The authorize URL of a standalone launch (``launch`` set: an EHR launch), with fresh secrets.

    ``extra``: further authorize parameters a standard defines, e.g. OpenID Connect Core 3.1.2.1
    ``login_hint``, ``prompt``, ``max_age``, ``ui_locales``, or RFC 8707 ``resource``; an authorization
    server ignores those it does not know (RFC 6749 3.1). The kit's own (:data:`KIT_AUTHORIZE_PARAMS`)
    are refused with :class:`ValueError`.
    """
    params = check_authorize_params(extra)
    verifier = make_verifier()
    state = secrets.token_urlsafe(32)
    params.update({
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "aud": aud.rstrip("/"),
        "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256",
    })
    if launch:
        params["launch"] = launch
    sep = "&" if urlsplit(config.authorization_endpoint).query else "?"
    return AuthorizationRequest(config.authorization_endpoint + sep + urlencode(params), redirect_uri, scope,
                                state, verifier, issuer=config.issuer,
                                iss_required=bool(config.authorization_response_iss_parameter_supported))


def parse_redirect(request: AuthorizationRequest, redirect_url: str) -> str:
    """The ``code`` of the redirect that answers ``request``.

    Raises :class:`OAuthError` for an error redirect (RFC 6749 4.1.2.1), a missing code, or a ``state``
    that does not match (CSRF protection, RFC 6749 10.12), and :class:`IssuerMismatch` when ``iss`` is
    not the discovered issuer, or is missing although the server advertises
    ``authorization_response_iss_parameter_supported`` (RFC 9207 2.4). Every check fails closed, and
    runs before an ``error`` is believed: a response from the wrong server tells nothing.
    """
    query = parse_qs(urlsplit(redirect_url).query)
    state = (query.get("state") or [""])[0]
    if not hmac.compare_digest(state.encode(), request.state.encode()):
        raise OAuthError("the redirect's state does not match the request (possible CSRF); log in again",
                         error="invalid_state")
    check_issuer(request, query.get("iss"))
    if "error" in query:
        raise OAuthError((query.get("error_description") or [query["error"][0]])[0], error=query["error"][0])
    code = (query.get("code") or [""])[0]
    if not code:
        raise OAuthError("the redirect carries no authorization code", error="invalid_request")
    return code


def check_issuer(request: AuthorizationRequest, iss: list[str] | None) -> None:
    """RFC 9207 2.4: ``iss`` of the authorization response, when present (required when the server
    advertised it), must be exactly the ``issuer`` discovered before the request (simple string
    comparison, RFC 3986 6.2.1; no normalisation). Raises :class:`IssuerMismatch`."""
    if iss is None:
        if request.iss_required:
            raise IssuerMismatch("the authorization response lacks the iss parameter its server promises "
                                 "(RFC 9207); refused, log in again")
        return
    if len(iss) != 1:
        raise IssuerMismatch("the authorization response carries iss more than once; refused")
    if request.issuer is None:
        raise IssuerMismatch("the authorization response names an issuer, but the discovery document "
                             "names none to compare it with (RFC 9207 2.4); refused")
    if not hmac.compare_digest(iss[0].encode(), request.issuer.encode()):
        raise IssuerMismatch(f"the authorization response comes from issuer {iss[0]!r}, not from "
                             f"{request.issuer!r} where the login started (possible mix-up attack, RFC 9700 "
                             "4.4); refused, its code is not used")


def _basic(credentials: tuple[str, str] | None) -> Any:
    import httpx

    return httpx.BasicAuth(*credentials) if credentials else httpx.USE_CLIENT_DEFAULT


def _token_call(http: httpx.Client, config: SmartConfiguration, client: ClientCredentials,
                form: dict[str, str]) -> dict[str, Any]:
    data, basic = client.apply(form)
    response = http.post(config.token_endpoint, data=data, auth=_basic(basic),
                         headers={"Accept": "application/json"})
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        if isinstance(body, dict) and "error" in body:
            raise OAuthError(str(body.get("error_description") or body["error"]), error=str(body["error"]),
                             status=response.status_code)
        raise ClientError(f"token endpoint answered {response.status_code}", status=response.status_code,
                          body=response.text[:500])
    return body


def exchange_code(http: httpx.Client, config: SmartConfiguration, client: ClientCredentials,
                  request: AuthorizationRequest, code: str) -> TokenSet:
    """Trade an authorization code for tokens (RFC 6749 4.1.3, with ``code_verifier``: RFC 7636 4.5)."""
    body = _token_call(http, config, client, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": request.redirect_uri,
        "code_verifier": request.code_verifier,
    })
    return TokenSet.from_response(body)


def refresh_tokens(http: httpx.Client, config: SmartConfiguration, client: ClientCredentials,
                   tokens: TokenSet) -> TokenSet:
    """A new access token from the refresh token (RFC 6749 6); the launch context carries over."""
    if not tokens.refresh_token:
        raise OAuthError("no refresh token (ask for offline_access or online_access); log in again",
                         error="invalid_grant")
    body = _token_call(http, config, client, {"grant_type": "refresh_token",
                                              "refresh_token": tokens.refresh_token})
    return TokenSet.from_response(body, previous=tokens)


def revoke_token(http: httpx.Client, config: SmartConfiguration, client: ClientCredentials,
                 token: str, hint: str) -> None:
    """Revoke ``token`` (RFC 7009 2.1). Raises :class:`ClientError` when the server refuses."""
    if not config.revocation_endpoint:
        raise ClientError("the EHR publishes no revocation_endpoint", status=400)
    data, basic = client.apply({"token": token, "token_type_hint": hint})
    response = http.post(config.revocation_endpoint, data=data, auth=_basic(basic))
    if response.status_code != 200:
        raise ClientError(f"revocation answered {response.status_code}", status=response.status_code,
                          body=response.text[:500])


# -- catching the redirect ----------------------------------------------------------------------------

class RedirectReceiver(Protocol):
    """Whatever catches the EHR's redirect: gives the ``redirect_uri`` to register in the request, then
    the full redirect URL it received. The Jupyter server extension implements it too."""

    @property
    def redirect_uri(self) -> str: ...

    def wait(self, timeout: float) -> str:
        """The redirect URL (with its query); raise :class:`TimeoutError` after ``timeout`` seconds."""
        ...

    def close(self) -> None: ...


_DONE_PAGE = (b"<!doctype html><meta charset=utf-8><title>s4s-jupyter</title>"
              b"<p>Signed in. You can close this tab and go back to your notebook.</p>")


def _refused_page(message: str) -> bytes:
    from html import escape

    return ("<!doctype html><meta charset=utf-8><title>s4s-jupyter</title>"
            f"<p>Sign-in refused: {escape(message)}</p><p>Go back to your notebook and log in again.</p>"
            ).encode()


class LoopbackRedirect:
    """A one-shot HTTP listener on ``127.0.0.1`` and a random port for the redirect (RFC 8252 7.3).

    It answers ``GET /callback?...`` once (the first request carrying ``code`` or ``error``), 404 to
    anything else, logs nothing (the query carries the code and state) and stops. With :attr:`request`
    set (:meth:`Session.login <s4s_jupyter.Session.login>` does), the page it shows already says whether
    the response passes :func:`parse_redirect` (state, RFC 9207 ``iss``, ``error``); the caller checks
    it again and raises.
    """

    path = "/callback"

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.request: AuthorizationRequest | None = None
        self._received: str | None = None
        self._event = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                if parts.path != outer.path or outer._event.is_set() or not (
                        "code" in query or "error" in query):
                    self.send_error(404)
                    return
                outer._received = f"http://{host}:{outer.port}{self.path}"
                status, page = 200, _DONE_PAGE
                if outer.request is not None:
                    try:
                        parse_redirect(outer.request, outer._received)
                    except OAuthError as exc:
                        status, page = 400, _refused_page(exc.message)
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Referrer-Policy", "no-referrer")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                outer._event.set()

            def log_message(self, format: str, *args: Any) -> None:  # never log codes or state
                return

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="s4s-oauth-redirect", daemon=True)
        self._thread.start()

    @property
    def redirect_uri(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def wait(self, timeout: float) -> str:
        if not self._event.wait(timeout):
            raise TimeoutError(f"no redirect reached {self.redirect_uri} within {timeout:.0f} s")
        assert self._received is not None
        return self._received

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackRedirect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _has_graphical_browser() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def default_browser(url: str) -> None:
    """Open ``url`` in the user's browser where one exists; always also show it (a notebook without a
    local browser, a remote kernel, a terminal): the user can open it by hand."""
    opened = False
    if _has_graphical_browser():
        import webbrowser

        try:
            opened = webbrowser.open(url, new=2)
        except webbrowser.Error:
            opened = False
    message = ("A browser window opened to sign in at the EHR. If it did not, open this link:"
               if opened else "Open this link to sign in at the EHR:")
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display

        if get_ipython() is not None:
            from html import escape

            display(HTML(f'<p>{escape(message)} <a href="{escape(url)}" target="_blank">sign in</a></p>'))
            return
    except ImportError:
        pass
    print(f"{message}\n{url}", flush=True)
