"""Authlib grants and endpoints with the SMART App Launch rules added.

Authlib does the protocol (RFC 6749 4.1 authorization code, 6 refresh, 4.4 client credentials, RFC 7636
PKCE, RFC 7662 introspection, RFC 7009 revocation). What these subclasses add by hand, because Authlib
leaves it to the application or does not do it:

- :class:`S256CodeChallenge`: PKCE is required for every client and only ``S256`` is accepted (SMART App
  Launch 2.x "Considerations for PKCE Support"; RFC 9700 2.1.1 forbids ``plain`` where S256 is possible).
- :class:`SmartLaunchRules`: ``state`` is required and ``aud`` must be this EHR's FHIR base (SMART App
  Launch 2.x "Obtaining authorization code", RFC 9700 4.7 on audience).
- :class:`SmartAuthorizationCodeGrant`: codes are single use; a second use revokes every token issued
  from the code (RFC 6749 4.1.2, RFC 9700 4.2.4).
- :class:`SmartRefreshTokenGrant`: refresh tokens rotate; a rotated token presented again revokes the
  whole family (RFC 9700 4.14.2); a refreshed scope must be covered by the granted one under SMART's v1/v2
  semantics (RFC 6749 6).
- :class:`SmartClientCredentialsGrant`: confidential clients only, ``system/`` scopes only (SMART Backend
  Services).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from s4s_jupyter.core.pkce import verify_s256
from s4s_jupyter.core.scopes import ScopeContext, ScopeSet, ScopeSyntaxError

from .store import AuthorizationCode, GrantContext, Token

if TYPE_CHECKING:
    from .server import SmartAuthorizationServer

log = logging.getLogger("s4s.ehr.oauth")


def _server(grant: Any) -> SmartAuthorizationServer:
    return grant.server


class S256CodeChallenge(CodeChallenge):
    """RFC 7636 with ``code_challenge`` and ``code_challenge_method=S256`` required on every request."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    CODE_CHALLENGE_METHODS = {"S256": verify_s256}

    def __init__(self) -> None:
        super().__init__(required=True)

    def validate_code_challenge(self, grant: Any, redirect_uri: Any) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge' (RFC 7636 4.3)")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE 'code_challenge_method' must be 'S256'; 'plain' is refused")
        super().validate_code_challenge(grant, redirect_uri)


class SmartLaunchRules:
    """Authorization-request checks SMART adds on top of RFC 6749 4.1.1 (an Authlib grant extension)."""

    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.validate)

    def validate(self, grant: Any, result: Any) -> None:
        data = grant.request.payload.data
        if not data.get("state"):
            raise InvalidRequestError("'state' is required (SMART App Launch, RFC 9700 2.1)")
        aud = data.get("aud")
        expected = _server(grant).endpoints.fhir_base
        if not aud:
            raise InvalidRequestError(f"'aud' is required and must be this server's FHIR base ({expected})")
        if aud.rstrip("/") != expected:
            raise InvalidRequestError(f"'aud' {aud!r} is not this server's FHIR base ({expected})")
        for name in ("aud", "code_challenge", "code_challenge_method", "nonce"):
            if len(grant.request.payload.datalist.get(name, [])) > 1:
                raise InvalidRequestError(f"Multiple '{name}' in request.")


class SmartAuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    """RFC 6749 4.1 with codes stored hashed, single use, and revoking their tokens when replayed."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "none"]

    def save_authorization_code(self, code: str, request: Any) -> None:
        context: GrantContext = request.user
        data = request.payload.data
        server = _server(self)
        assert context.user is not None
        server.store.save_code(
            code, client_id=request.client.client_id, redirect_uri=request.payload.redirect_uri,
            scope=request.scope, username=context.user.username, patient=context.patient,
            code_challenge=data["code_challenge"], code_challenge_method=data["code_challenge_method"],
            nonce=data.get("nonce"), lifetime=server.settings.code_lifetime)

    def query_authorization_code(self, code: str, client: Any) -> AuthorizationCode | None:
        found = _server(self).store.find_code(code, client.client_id)
        if found is None:
            log.info("token request with an unknown, expired or reused code from %s", client.client_id)
        return found

    def create_token_response(self) -> Any:
        code: AuthorizationCode = self.request.authorization_code
        if not _server(self).store.mark_code_used(code):
            _server(self).store.revoke_grant(code.grant_id)
            raise InvalidGrantError("The code was used already.")
        return super().create_token_response()

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing to do: :meth:`create_token_response` marked the code used (kept to detect replay)."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> GrantContext | None:
        user = _server(self).store.user(authorization_code.username)
        if user is None:
            return None
        return GrantContext(user, authorization_code.patient, authorization_code.grant_id,
                            authorization_code.nonce)


class SmartRefreshTokenGrant(grants.RefreshTokenGrant):
    """RFC 6749 6 with rotation and family revocation on reuse (RFC 9700 4.14.2)."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        store = _server(self).store
        token = store.find_refresh_token(refresh_token)
        if token is None:
            return None
        if token.refresh_used_at is not None:
            log.warning("refresh token reuse detected for client %s: revoking the token family",
                        token.client_id)
            store.revoke_grant(token.grant_id)
            return None
        if token.is_revoked() or token.is_expired():
            return None
        return token

    def _validate_token_scope(self, token: Token) -> None:
        scope = self.request.payload.scope
        if not scope:
            return
        try:
            requested = ScopeSet.parse(scope)
        except ScopeSyntaxError as exc:
            raise InvalidScopeError(str(exc)) from None
        if not requested.is_subset_of(ScopeSet.parse(token.get_scope(), strict=False)):
            raise InvalidScopeError("The requested scope exceeds the scope originally granted.")

    def create_token_response(self) -> Any:
        token: Token = self.request.refresh_token
        store = _server(self).store
        if not store.rotate_refresh_token(token):
            store.revoke_grant(token.grant_id)
            raise InvalidGrantError("The refresh token was used already.")
        return super().create_token_response()

    def authenticate_user(self, refresh_token: Token) -> GrantContext | None:
        user = _server(self).store.user(refresh_token.username)
        if user is None:
            return None
        return GrantContext(user, refresh_token.patient, refresh_token.grant_id)

    def revoke_old_credential(self, refresh_token: Token) -> None:
        """Nothing to do: :meth:`create_token_response` rotated it before issuing the new one."""


class SmartClientCredentialsGrant(grants.ClientCredentialsGrant):
    """RFC 6749 4.4 for confidential clients with ``system/`` scopes (SMART Backend Services)."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]

    def validate_token_request(self) -> None:
        super().validate_token_request()
        scope = self.request.payload.scope or ""
        try:
            requested = ScopeSet.parse(scope)
        except ScopeSyntaxError as exc:
            raise InvalidScopeError(str(exc)) from None
        if not requested.clinical or requested.other or any(
                c.context != ScopeContext.SYSTEM for c in requested.clinical):
            raise InvalidScopeError("client_credentials takes system/ scopes only")
        if not requested.is_subset_of(self.client.allowed_scopes):
            raise InvalidScopeError("The requested scope is not registered for this client.")


class SmartIntrospectionEndpoint(IntrospectionEndpoint):
    """RFC 7662 for authenticated confidential clients; only access tokens are ever active."""

    CLIENT_AUTH_METHODS = ["client_secret_basic"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        return _server(self).store.find_access_token(token_string)

    def check_permission(self, token: Token, client: Any, request: Any) -> bool:
        return bool(client.is_confidential)

    def introspect_token(self, token: Token) -> dict[str, Any]:
        return _server(self).introspector.result_for(token).to_json()


class SmartRevocationEndpoint(RevocationEndpoint):
    """RFC 7009: revoking an access or refresh token ends the whole authorization it belongs to."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        store = _server(self).store
        if token_type_hint == "refresh_token":
            return store.find_refresh_token(token_string) or store.find_access_token(token_string)
        return store.find_access_token(token_string) or store.find_refresh_token(token_string)

    def revoke_token(self, token: Token, request: Any) -> None:
        _server(self).store.revoke_grant(token.grant_id)
