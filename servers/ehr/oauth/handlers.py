"""JSON endpoints of the authorization server: token (RFC 6749 3.2), introspection (RFC 7662),
revocation (RFC 7009), JWK Set (RFC 7517) and the SMART configuration. Authlib does the work; these
handlers parse nothing themselves and write what it answers. Errors go through
:class:`servers.base.OAuthHandler` (RFC 6749 5.2 JSON, ``Cache-Control: no-store``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tornado.web

from s4s_jupyter.core.errors import OAuthError
from servers.base import OAuthHandler

from .pages import AuthContext, AuthorizeHandler, ConsentHandler, LoginHandler, PatientPickerHandler
from .server import ClientAuthenticationError, OAuthResponse
from .smart_config import openid_configuration, smart_configuration

#: parameters that must never travel in a URL (RFC 6749 3.2, RFC 9700 4.3)
SECRET_PARAMETERS = ("code", "code_verifier", "refresh_token", "client_secret", "token", "password")


class AuthAPIHandler(OAuthHandler):
    def initialize(self, ctx: AuthContext) -> None:
        self.ctx = ctx
        self.server = ctx.server

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = self.error_from(kwargs)
        if isinstance(exc, ClientAuthenticationError) and exc.status == 401:
            self.set_header("WWW-Authenticate", 'Basic realm="s4s-ehr"')
        super().write_error(status_code, **kwargs)

    def refuse_secrets_in_query(self) -> None:
        leaked = [p for p in SECRET_PARAMETERS if p in self.request.query_arguments]
        if leaked:
            raise OAuthError(f"{', '.join(leaked)} must be sent in the request body, not the URL")

    def send(self, response: OAuthResponse | None) -> None:
        if response is None:
            raise OAuthError("no response", error="server_error", status=500)
        self.set_status(response.status)
        for name, value in response.headers:
            self.set_header(name, value)
        body = response.body
        self.finish(json.dumps(body) if isinstance(body, dict | list) else body or "")


class TokenHandler(AuthAPIHandler):
    def post(self) -> None:
        self.refuse_secrets_in_query()
        self.send(self.server.create_token_response(self.request))


class IntrospectionHandler(AuthAPIHandler):
    def post(self) -> None:
        self.refuse_secrets_in_query()
        self.send(self.server.create_endpoint_response("introspection", self.request))


class RevocationHandler(AuthAPIHandler):
    def post(self) -> None:
        self.refuse_secrets_in_query()
        self.send(self.server.create_endpoint_response("revocation", self.request))


class PublicJSONHandler(AuthAPIHandler):
    """Public documents: cacheable for a short while, readable by browser apps (CORS)."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "public, max-age=60")
        self.clear_header("Pragma")
        self.set_header("Access-Control-Allow-Origin", "*")


class JWKSHandler(PublicJSONHandler):
    def get(self) -> None:
        self.write_json(self.server.signer.jwks())


class SmartConfigurationHandler(PublicJSONHandler):
    def get(self) -> None:
        endpoints = self.server.endpoints
        associated = self.server.settings.imaging_endpoints(endpoints.fhir_base)
        self.write_json(smart_configuration(endpoints, associated))


class OpenIDConfigurationHandler(PublicJSONHandler):
    def get(self) -> None:
        self.write_json(openid_configuration(self.server.endpoints))


def auth_routes(ctx: AuthContext) -> list[tornado.web.URLSpec]:
    """URL rules of the authorization server (see :mod:`servers.ehr.oauth.endpoints`)."""
    static = str(Path(__file__).resolve().parent / "static")
    kw = {"ctx": ctx}
    return [
        tornado.web.url(r"/fhir/\.well-known/smart-configuration", SmartConfigurationHandler, kw),
        tornado.web.url(r"/\.well-known/smart-configuration", SmartConfigurationHandler, kw),
        tornado.web.url(r"/fhir/\.well-known/openid-configuration", OpenIDConfigurationHandler, kw),
        tornado.web.url(r"/auth/authorize", AuthorizeHandler, kw),
        tornado.web.url(r"/auth/login", LoginHandler, kw),
        tornado.web.url(r"/auth/patient", PatientPickerHandler, kw),
        tornado.web.url(r"/auth/consent", ConsentHandler, kw),
        tornado.web.url(r"/auth/token", TokenHandler, kw),
        tornado.web.url(r"/auth/introspect", IntrospectionHandler, kw),
        tornado.web.url(r"/auth/revoke", RevocationHandler, kw),
        tornado.web.url(r"/auth/jwks", JWKSHandler, kw),
        tornado.web.url(r"/auth/static/(ehr\.css)", tornado.web.StaticFileHandler, {"path": static}),
    ]
