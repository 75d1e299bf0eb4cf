"""In-process token introspection for the EHR's resource servers (its FHIR API, a mounted broker).

:class:`TokenIntrospector` answers the same :class:`~s4s_jupyter.core.introspection.IntrospectionResult`
as the RFC 7662 endpoint (``/auth/introspect``) would, without an HTTP round trip. Only access tokens are
active here and at the endpoint: a refresh token is never a bearer credential (RFC 6749 1.5), so it
introspects as ``{"active": false}`` and a resource server cannot be fooled into accepting one.
"""

from __future__ import annotations

from typing import Protocol

from s4s_jupyter.core.introspection import IntrospectionResult

from .store import OAuthStore, Token


class Introspector(Protocol):
    """What a resource server needs to check a bearer token."""

    def introspect(self, token: str) -> IntrospectionResult: ...


class TokenIntrospector:
    """Introspection of the EHR's own access tokens, against its store (RFC 7662 2.2 + SMART fields).

    ``issuer`` is the EHR's FHIR base (``iss`` of its id_tokens). ``sub``, ``fhirUser`` and ``iss`` are
    included when an id_token was issued with the token, as SMART App Launch 2.x "Token Introspection"
    describes; ``patient`` whenever the token is bound to a patient.
    """

    def __init__(self, store: OAuthStore, issuer: str) -> None:
        self.store = store
        self.issuer = issuer

    def introspect(self, token: str) -> IntrospectionResult:
        """Introspect an access token. Anything unknown, expired or revoked is ``active: false``."""
        if not isinstance(token, str) or not token:
            return IntrospectionResult(active=False)
        found = self.store.find_access_token(token)
        return self.result_for(found)

    def result_for(self, token: Token | None) -> IntrospectionResult:
        if token is None or not token.is_active():
            return IntrospectionResult(active=False)
        with_id = token.id_token_issued
        return IntrospectionResult(
            active=True,
            scope=token.scope,
            client_id=token.client_id,
            exp=int(token.access_expires_at),
            iat=int(token.issued_at),
            patient=token.patient,
            sub=token.username if with_id else None,
            fhir_user=token.fhir_user if with_id else None,
            iss=self.issuer if with_id else None,
            token_type="Bearer",
        )
