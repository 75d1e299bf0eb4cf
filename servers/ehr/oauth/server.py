"""Authlib's OAuth 2.0 AuthorizationServer under Tornado (the thin adapter), with SMART's token fields.

Authlib is framework-agnostic: an integration supplies ``create_oauth2_request`` (HTTP request ->
:class:`~authlib.oauth2.rfc6749.OAuth2Request`), ``handle_response`` (status, body, headers -> response)
and ``send_signal``, as its Flask and Django integrations do. Here a response is an :class:`OAuthResponse`
that the Tornado handler writes, and an error that is not a redirect is raised as the project's
:class:`~s4s_jupyter.core.errors.OAuthError`, so :class:`servers.base.OAuthHandler` writes RFC 6749 5.2
JSON in the one place errors become HTTP.

Every authorization response that goes back to the client (a code, or an error redirect) carries ``iss``,
the issuer of the SMART configuration (RFC 9207 2), added by Authlib's
:class:`~authlib.oauth2.rfc9207.IssuerParameter` in :meth:`SmartAuthorizationServer.with_issuer`, so a
client talking to several authorization servers can detect a mix-up (RFC 9700 4.4).

The token generator adds SMART App Launch 2.x's fields to Authlib's Bearer token: ``patient`` when
``launch/patient`` was granted, ``id_token`` when ``openid`` was, and a refresh token only with
``offline_access`` or ``online_access``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationServer, JsonRequest, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.errors import InsecureTransportError, InvalidScopeError, OAuth2Error
from authlib.oauth2.rfc9207 import IssuerParameter
from tornado.httputil import HTTPServerRequest

from s4s_jupyter.core.errors import OAuthError
from s4s_jupyter.core.scopes import ScopeSet, ScopeSyntaxError

from ..settings import EHRSettings
from .clients import Client, ClientRegistry
from .endpoints import OAuthEndpoints
from .grants import (
    S256CodeChallenge,
    SmartAuthorizationCodeGrant,
    SmartClientCredentialsGrant,
    SmartIntrospectionEndpoint,
    SmartLaunchRules,
    SmartRefreshTokenGrant,
    SmartRevocationEndpoint,
)
from .idtoken import IdTokenSigner
from .introspector import TokenIntrospector
from .store import GrantContext, OAuthStore, new_secret

log = logging.getLogger("s4s.ehr.oauth")


class ClientAuthenticationError(OAuthError):
    """``invalid_client`` with 401: the handler adds ``WWW-Authenticate: Basic`` (RFC 6749 5.2)."""

    status = 401
    error = "invalid_client"


@dataclass
class OAuthResponse:
    """What Authlib asks the framework to send."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        return dict(self.headers).get("Location")

    @location.setter
    def location(self, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != "location"] + [("Location", value)]


class SmartIssuerParameter(IssuerParameter):
    """RFC 9207's ``iss`` authorization response parameter with this server's issuer.

    Applied by :meth:`SmartAuthorizationServer.with_issuer` rather than registered as an Authlib extension:
    Authlib 1.9 registers it on a server hook its ``create_authorization_response`` never runs, and error
    redirects for requests refused before consent do not pass through that method at all.
    """

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer


class ParamsPayload(OAuth2Payload):
    """Request parameters as Authlib reads them: first values in ``data``, all in ``datalist``."""

    def __init__(self, params: Mapping[str, list[str]]) -> None:
        self._datalist = {k: list(v) for k, v in params.items()}
        self._data = {k: v[0] for k, v in self._datalist.items() if v}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


class TornadoOAuth2Request(OAuth2Request):
    """An :class:`OAuth2Request` from Tornado's parsed request, or from a stored authorization request.

    A GET reads the query string; a POST reads only the form body (RFC 6749 3.2: token requests carry
    their parameters in the body, so nothing secret is taken from a URL).
    """

    def __init__(self, method: str, uri: str, headers: Any, query: Mapping[str, list[str]],
                 form: Mapping[str, list[str]]) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self._query = ParamsPayload(query)
        self._form = ParamsPayload(form)
        self.payload = self._form if method == "POST" else self._query

    @property
    def args(self) -> dict[str, str]:
        return self._query.data

    @property
    def form(self) -> dict[str, str]:
        return self._form.data


def _decode(args: Mapping[str, list[bytes]]) -> dict[str, list[str]]:
    try:
        return {k: [v.decode("utf-8") for v in vs] for k, vs in args.items()}
    except UnicodeDecodeError:
        raise OAuthError("request parameters must be UTF-8") from None


class SmartAuthorizationServer(AuthorizationServer):
    """The EHR's authorization server: Authlib's machinery, the project's store and SMART rules."""

    def __init__(self, settings: EHRSettings, endpoints: OAuthEndpoints, registry: ClientRegistry,
                 store: OAuthStore, signer: IdTokenSigner) -> None:
        super().__init__()
        self.settings = settings
        self.endpoints = endpoints
        self.registry = registry
        self.store = store
        self.signer = signer
        self.introspector = TokenIntrospector(store, endpoints.issuer)
        self.issuer_parameter = SmartIssuerParameter(endpoints.issuer)
        self.register_token_generator("default", self.generate_bearer_token)
        self.register_grant(SmartAuthorizationCodeGrant, [S256CodeChallenge(), SmartLaunchRules()])
        self.register_grant(SmartRefreshTokenGrant)
        self.register_grant(SmartClientCredentialsGrant)
        self.register_endpoint(SmartIntrospectionEndpoint)
        self.register_endpoint(SmartRevocationEndpoint)

    # -- Authlib's integration points --------------------------------------------------------------

    def query_client(self, client_id: str) -> Client | None:
        return self.registry.get(client_id)

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        if not isinstance(request, HTTPServerRequest):
            raise TypeError(f"cannot make an OAuth2Request from {type(request).__name__}")
        form = _decode(request.body_arguments) if request.method == "POST" else {}
        return self._request(request.method or "GET", request.path, request.headers,
                             _decode(request.query_arguments), form)

    def request_from_params(self, params: Mapping[str, str]) -> OAuth2Request:
        """An authorization request rebuilt from its stored parameters (after login and consent)."""
        return self._request("GET", "/auth/authorize", {}, {k: [v] for k, v in params.items()}, {})

    def _request(self, method: str, path: str, headers: Any, query: Mapping[str, list[str]],
                 form: Mapping[str, list[str]]) -> OAuth2Request:
        try:
            return TornadoOAuth2Request(method, self.endpoints.base_url + path, headers, query, form)
        except InsecureTransportError:
            raise OAuthError("OAuth 2.0 needs TLS except on loopback; serve the EHR behind HTTPS",
                             error="invalid_request") from None

    def create_json_request(self, request: Any) -> JsonRequest:
        if not isinstance(request, HTTPServerRequest):
            raise TypeError(f"cannot make a JsonRequest from {type(request).__name__}")
        json_request = JsonRequest(request.method, self.endpoints.base_url + request.path, request.headers)

        class _Payload:
            data = json.loads(request.body or b"{}")

        json_request.payload = _Payload()
        return json_request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> OAuthResponse:
        return OAuthResponse(status, body, list(headers))

    def handle_error_response(self, request: Any, error: OAuth2Error) -> OAuthResponse:
        """A redirect when Authlib verified the redirect URI (RFC 6749 4.1.2.1); else raise for the
        handler's ``write_error`` (RFC 6749 5.2 JSON)."""
        if error.redirect_uri:
            return super().handle_error_response(request, error)
        raise to_project_error(error)

    def with_issuer(self, response: OAuthResponse) -> OAuthResponse:
        """The authorization response (success or error redirect) with ``iss`` added (RFC 9207 2)."""
        self.issuer_parameter.add_issuer_parameter(self, response)
        return response

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "after_revoke_token":
            log.info("token revoked by client %s", getattr(kwargs.get("client"), "client_id", "?"))

    def validate_requested_scope(self, scope: str | None) -> None:
        """Every requested scope must be SMART syntax (SMART App Launch 2.x "Scopes")."""
        if scope:
            try:
                ScopeSet.parse(scope)
            except ScopeSyntaxError as exc:
                raise InvalidScopeError(str(exc)) from None

    # -- tokens ------------------------------------------------------------------------------------

    def generate_bearer_token(self, grant_type: str, client: Client, user: GrantContext | None = None,
                              scope: str | None = None, expires_in: int | None = None,
                              include_refresh_token: bool = True) -> dict[str, Any]:
        """RFC 6750 Bearer token with SMART fields; tokens are opaque random strings."""
        scope = scope or ""
        granted = ScopeSet.parse(scope, strict=False)
        token: dict[str, Any] = {
            "access_token": new_secret(),
            "token_type": "Bearer",
            "expires_in": self.settings.access_token_lifetime,
            "scope": scope,
        }
        if user is None:
            return token
        if include_refresh_token and (granted.has("offline_access") or granted.has("online_access")):
            token["refresh_token"] = new_secret()
        if user.patient and granted.has("launch/patient"):
            token["patient"] = user.patient
        if user.user and granted.has("openid"):
            token["id_token"] = self.signer.sign(
                subject=user.user.username, client_id=client.client_id, now=self.store.clock(),
                nonce=user.nonce if grant_type == "authorization_code" else None,
                fhir_user=self.fhir_user_url(user) if granted.has("fhirUser") else None,
                name=user.user.display_name if granted.has("profile") else None)
        return token

    def fhir_user_url(self, context: GrantContext) -> str | None:
        """Absolute URL of the user's FHIR resource for this grant's patient (SMART "fhirUser")."""
        reference = context.user.fhir_user_for(context.patient) if context.user else None
        return f"{self.endpoints.fhir_base}/{reference}" if reference else None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        context: GrantContext | None = request.user
        granted = ScopeSet.parse(token.get("scope", ""), strict=False)
        self.store.save_token(
            grant_id=context.grant_id if context else new_secret(16),
            client_id=request.client.client_id,
            username=context.user.username if context and context.user else None,
            patient=context.patient if context else None,
            scope=token.get("scope", ""),
            fhir_user=self.fhir_user_url(context) if context and granted.has("fhirUser") else None,
            id_token_issued="id_token" in token,
            access_token=token["access_token"],
            expires_in=int(token["expires_in"]),
            refresh_token=token.get("refresh_token"),
            refresh_lifetime=self.settings.refresh_token_lifetime,
        )


_DEFAULT_DESCRIPTIONS = {
    "invalid_grant": "The code or refresh token is invalid, expired, revoked, already used, or was issued "
                     "to another client.",
    "invalid_scope": "The requested scope is invalid, unknown, or exceeds what may be granted.",
    "invalid_client": "Client authentication failed.",
}


def to_project_error(error: OAuth2Error) -> OAuthError:
    """Authlib's error as the project's (RFC 6749 5.2 wire form unchanged)."""
    description = (error.get_error_description() or _DEFAULT_DESCRIPTIONS.get(error.error or "")
                   or error.error or "invalid request")
    if error.error == "invalid_client":
        return ClientAuthenticationError(description, status=error.status_code)
    return OAuthError(description, error=error.error, status=error.status_code)
