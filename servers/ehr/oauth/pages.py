"""The authorization endpoint and its pages: login, patient picker, consent (SMART App Launch 2.x
standalone launch; RFC 6749 4.1.1-4.1.2).

``GET``/``POST /auth/authorize`` validates the request with Authlib and keeps it server-side (a row keyed
by the hash of a random id, the id in a signed, HttpOnly, SameSite=Lax cookie), then the browser walks
``/auth/login`` -> ``/auth/patient`` (only when the user may act for more than one patient) ->
``/auth/consent``. Each form is protected by Tornado's XSRF token. Approving rebuilds the stored request
(with the scopes left ticked) and lets Authlib issue the code and the redirect; denying redirects with
``error=access_denied``. Errors before the redirect URI is verified are an HTML page, never a redirect
(RFC 6749 4.1.2.1). Every page forbids framing and referrers (RFC 9700 4.16, 4.2.4).

The form field names (``username``, ``password``, ``patient``, ``scope``, ``approve``, ``deny``) are a
contract with tests and automation (DESIGN.md "Running it").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tornado.web
from authlib.oauth2.rfc6749.errors import OAuth2Error
from tornado.ioloop import IOLoop

from s4s_jupyter.core.errors import OAuthError
from servers.base import BaseHandler
from servers.demo_data.plan import DemoPlan

from .clients import is_loopback_uri
from .consent_text import describe_scope
from .server import OAuthResponse, SmartAuthorizationServer
from .store import GrantContext, PendingRequest
from .throttle import LoginThrottle
from .users import User

log = logging.getLogger("s4s.ehr.oauth")

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

#: failed sign-ins allowed per authorization request before it is dropped (online guessing)
MAX_LOGIN_ATTEMPTS = 5

PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}


@dataclass
class AuthContext:
    """What the authorization server's handlers share."""

    server: SmartAuthorizationServer
    plan: DemoPlan
    throttle: LoginThrottle

    @property
    def cookie_name(self) -> str:
        """Per-port name: several EHRs on one loopback host must not overwrite each other's cookie."""
        return f"s4s_ehr_authz_{urlsplit(self.server.endpoints.base_url).port or 80}"


class PageError(OAuthError):
    """An error shown as an HTML page (the request cannot be sent back to the client)."""


class AuthPageHandler(BaseHandler):
    """HTML pages: anti-framing, no referrer, no caching; errors rendered as a page."""

    def initialize(self, ctx: AuthContext) -> None:
        self.ctx = ctx
        self.server = ctx.server
        self.store = ctx.server.store

    def set_default_headers(self) -> None:
        super().set_default_headers()
        for name, value in PAGE_HEADERS.items():
            self.set_header(name, value)

    def prepare(self) -> None:
        """Every form POST carries the XSRF token of this browser (RFC 9700 4.4; Tornado's ``_xsrf``)."""
        if self.request.method == "POST":
            self.check_xsrf_cookie()

    def get_template_path(self) -> str:
        return str(TEMPLATES)

    def get_template_namespace(self) -> dict[str, Any]:
        ns = super().get_template_namespace()
        ns["css_url"] = "/auth/static/ehr.css"
        return ns

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = self.error_from(kwargs)
        if isinstance(exc, OAuthError):
            code = None if isinstance(exc, PageError) else exc.error
            message, status = exc.message, exc.status
        elif isinstance(exc, tornado.web.HTTPError) and status_code == 403:
            message, code, status = "The form was not accepted (missing or wrong XSRF token).", None, 403
        elif isinstance(exc, tornado.web.HTTPError):
            message, code, status = exc.log_message or self._reason, None, status_code
        else:
            message, code, status = "Internal server error.", None, 500
        self.set_status(status)
        self.render("error.html", message=message, error_code=code)

    # -- the pending request -----------------------------------------------------------------------

    def pending_id(self) -> str | None:
        raw = self.get_signed_cookie(self.ctx.cookie_name, max_age_days=1)
        return raw.decode("ascii") if raw else None

    def pending(self) -> tuple[str, PendingRequest]:
        rid = self.pending_id()
        found = self.store.pending(rid)
        if rid is None or found is None:
            raise PageError("This sign-in has expired or was never started here. Go back to the app and "
                            "start again.", status=400)
        return rid, found

    def client_name(self, pending: PendingRequest) -> str:
        client = self.server.query_client(pending.params.get("client_id", ""))
        return (client.client_name or client.client_id) if client else "An app"

    def user_of(self, pending: PendingRequest) -> User:
        user = self.store.user(pending.username)
        if user is None:
            self.redirect("/auth/login", status=303)
            raise tornado.web.Finish()
        return user

    # -- finishing: Authlib issues the code (or the access_denied error) and the redirect ------------

    def finish_authorization(self, params: dict[str, str], user: User | None, patient: str | None,
                             approved: list[str] | None) -> None:
        """Approve (``user`` given) with the ``approved`` scopes, or deny (``user`` None)."""
        self.clear_cookie(self.ctx.cookie_name, path="/auth")
        params = dict(params)
        if approved is not None:
            params["scope"] = " ".join(approved)
        request = self.server.request_from_params(params)
        try:
            grant = self.server.get_consent_grant(request)
        except OAuth2Error as error:
            self.send_authorize_error(error)
            return
        grant_user = GrantContext(user, patient, "", params.get("nonce")) if user else None
        response: OAuthResponse = self.server.create_authorization_response(request, grant_user, grant)
        self.redirect_to_client(response)

    def redirect_to_client(self, response: OAuthResponse) -> None:
        """The one way back to the client: every authorization response, with RFC 9207 ``iss``.

        After a form POST the status is 303, never 307 (RFC 9700 4.12): the browser must not re-send the
        form (with its XSRF token, or a password) to the client; after a GET, 302 (RFC 6749 4.1.2).
        """
        location = self.server.with_issuer(response).location
        if not location:
            raise PageError("the authorization server produced no redirect", status=500)
        self.redirect(location, status=303 if self.request.method == "POST" else 302)

    def send_authorize_error(self, error: OAuth2Error) -> None:
        """Redirect with the error when Authlib verified the redirect URI; else an error page."""
        if error.redirect_uri:
            status, _body, headers = error()
            self.redirect_to_client(OAuthResponse(status, "", list(headers)))
            return
        description = error.get_error_description() or "The request is not valid."
        raise OAuthError(description, error=error.error or "invalid_request", status=400)


class AuthorizeHandler(AuthPageHandler):
    """``/auth/authorize`` (GET and POST, RFC 6749 3.1): validate, keep server-side, go to the login."""

    def check_xsrf_cookie(self) -> None:
        """A new authorization request changes nothing yet: no XSRF token (it comes from another site)."""

    def get(self) -> None:
        self.authorize()

    def post(self) -> None:
        self.authorize()

    def authorize(self) -> None:
        try:
            grant = self.server.get_consent_grant(self.request)
        except OAuth2Error as error:
            self.send_authorize_error(error)
            return
        params = dict(grant.request.payload.data)
        if self.server.settings.auto_approve and is_loopback_uri(grant.redirect_uri):
            self.auto_approve(params)
            return
        rid = self.store.create_pending(params, self.server.settings.pending_request_lifetime)
        self.set_signed_cookie(self.ctx.cookie_name, rid, expires_days=None, path="/auth", httponly=True,
                               samesite="Lax")
        self.redirect("/auth/login", status=303)

    def auto_approve(self, params: dict[str, str]) -> None:
        """DEMO ONLY (``--auto-approve``): the first user who may act for the hinted patient (``patient``
        or ``login_hint``), else the first user and their first patient; every requested scope."""
        users = [u for u in self.store.users() if u.patient_ids]
        hint = params.get("patient") or params.get("login_hint")
        chosen = next(((u, hint) for u in users if hint and u.may_act_for(hint)), None)
        if chosen is None and hint:
            chosen = next(((u, u.patient_ids[0]) for u in users if u.username == hint), None)
        if chosen is None and users:
            chosen = (users[0], users[0].patient_ids[0])
        if chosen is None:
            raise PageError("auto-approve: no user may act for any patient", status=400)
        user, patient = chosen
        log.warning("auto-approve: granting %s for patient %s without login or consent",
                    params.get("client_id"), patient)
        self.finish_authorization(params, user, patient, None)


class LoginHandler(AuthPageHandler):
    """``/auth/login``: fields ``username`` and ``password``."""

    def get(self) -> None:
        _, pending = self.pending()
        self.show(pending)

    def show(self, pending: PendingRequest, error: str = "", username: str = "") -> None:
        self.render("login.html", client_name=self.client_name(pending), error=error, username=username,
                    action="/auth/login")

    async def post(self) -> None:
        rid, pending = self.pending()
        username = self.get_body_argument("username", "").strip()
        password = self.get_body_argument("password", "")
        address = self.request.remote_ip or ""
        # charged before the password is checked (throttle.py); a refused attempt checks nothing, so the
        # answer says nothing about the password
        wait = self.ctx.throttle.attempt(username, address)
        if wait is not None:
            log.warning("sign-in refused by the throttle (too many failures for the account or address)")
            self.set_status(429)
            self.set_header("Retry-After", str(int(wait)))
            self.show(pending, "Too many failed sign-ins for this account or from this address. "
                               "Wait a few minutes, then try again.", username)
            return
        user = None
        if username and password:  # scrypt takes tens of milliseconds: keep it off the event loop
            check = self.store.authenticate_user
            user = await IOLoop.current().run_in_executor(None, check, username, password)
        if user is not None:
            self.ctx.throttle.succeeded(username, address)
        if user is None:
            log.info("failed sign-in at the EHR")
            if self.store.count_failed_login(rid) >= MAX_LOGIN_ATTEMPTS:
                self.store.drop_pending(rid)
                raise PageError("Too many failed sign-ins. Go back to the app and start again.", status=429)
            self.set_status(401)
            self.show(pending, "Unknown username or wrong password.", username)
            return
        if not user.patient_ids:
            raise PageError("This login may not act for any patient.", status=403)
        self.store.update_pending(rid, username=user.username)
        if len(user.patient_ids) == 1:
            self.store.update_pending(rid, patient=user.patient_ids[0])
            self.redirect("/auth/consent", status=303)
        else:
            self.redirect("/auth/patient", status=303)


class PatientPickerHandler(AuthPageHandler):
    """``/auth/patient``: field ``patient`` (only for users who may act for several patients)."""

    def get(self) -> None:
        _, pending = self.pending()
        self.show(pending, self.user_of(pending))

    def show(self, pending: PendingRequest, user: User, error: str = "") -> None:
        patients = []
        for pid in user.patient_ids:
            try:
                p = self.ctx.plan.patient(pid)
                patients.append({"id": pid, "name": p.display_name, "birth_date": p.birth_date.isoformat(),
                                 "mrn": p.mrn})
            except KeyError:
                patients.append({"id": pid, "name": pid, "birth_date": "?", "mrn": "?"})
        self.render("picker.html", client_name=self.client_name(pending), user_name=user.display_name,
                    patients=patients, error=error, action="/auth/patient")

    def post(self) -> None:
        rid, pending = self.pending()
        user = self.user_of(pending)
        patient = self.get_body_argument("patient", "")
        if not user.may_act_for(patient):
            self.set_status(400)
            self.show(pending, user, "Choose one of the listed patients.")
            return
        self.store.update_pending(rid, patient=patient)
        self.redirect("/auth/consent", status=303)


class ConsentHandler(AuthPageHandler):
    """``/auth/consent``: one checkbox ``scope`` per requested scope; buttons ``approve`` / ``deny``."""

    def ready(self) -> tuple[str, PendingRequest, User, str]:
        rid, pending = self.pending()
        user = self.user_of(pending)
        if not user.may_act_for(pending.patient):
            self.redirect("/auth/patient", status=303)
            raise tornado.web.Finish()
        assert pending.patient is not None
        return rid, pending, user, pending.patient

    def get(self) -> None:
        _, pending, user, patient = self.ready()
        requested = pending.params.get("scope", "").split()
        try:
            patient_name = self.ctx.plan.patient(patient).display_name
        except KeyError:
            patient_name = patient
        redirect_host = urlsplit(pending.params.get("redirect_uri", "")).netloc
        self.render("consent.html", client_name=self.client_name(pending), user_name=user.display_name,
                    patient_name=patient_name, error="", action="/auth/consent", redirect_host=redirect_host,
                    scopes=[{"scope": s, "text": describe_scope(s)} for s in dict.fromkeys(requested)])

    def post(self) -> None:
        rid, _pending, user, patient = self.ready()
        pending = self.store.take_pending(rid)  # one decision per request
        if pending is None:
            raise PageError("This sign-in has already been decided or has expired.", status=400)
        deny = self.get_body_argument("deny", None) is not None
        approve = self.get_body_argument("approve", None) is not None
        if deny or not approve:
            log.info("user denied the authorization request of %s", pending.params.get("client_id"))
            self.finish_authorization(pending.params, None, None, None)
            return
        requested = pending.params.get("scope", "").split()
        ticked = set(self.get_body_arguments("scope"))
        approved = [s for s in dict.fromkeys(requested) if s in ticked]  # never more than was asked
        if not approved:
            self.finish_authorization(pending.params, None, None, None)
            return
        self.finish_authorization(pending.params, user, patient, approved)
