"""``.well-known/smart-configuration`` (SMART App Launch 2.x, "Conformance": metadata document)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..settings import AssociatedEndpoint
from .endpoints import OAuthEndpoints

CAPABILITIES = (
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "context-standalone-patient",
    "permission-patient",
    "permission-user",
    "permission-offline",
    "permission-online",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
)

SCOPES_SUPPORTED = (
    "openid", "fhirUser", "profile", "launch/patient", "offline_access", "online_access",
    "patient/*.rs", "patient/*.read", "user/*.rs", "user/*.read", "system/*.rs", "system/*.read",
)


def smart_configuration(endpoints: OAuthEndpoints,
                        associated: Iterable[AssociatedEndpoint] = ()) -> dict[str, Any]:
    """The discovery document, with ``associated_endpoints`` (e.g. the imaging broker)."""
    doc: dict[str, Any] = {
        "issuer": endpoints.issuer,
        "jwks_uri": endpoints.jwks,
        "authorization_endpoint": endpoints.authorize,
        "token_endpoint": endpoints.token,
        "introspection_endpoint": endpoints.introspect,
        "revocation_endpoint": endpoints.revoke,
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        "scopes_supported": list(SCOPES_SUPPORTED),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "authorization_response_iss_parameter_supported": True,
        "capabilities": list(CAPABILITIES),
    }
    doc["associated_endpoints"] = [a.to_json() for a in associated]
    return doc


def openid_configuration(endpoints: OAuthEndpoints) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 metadata at ``{issuer}/.well-known/openid-configuration``; SMART's
    ``sso-openid-connect`` needs it so an app can verify an id_token's ``iss`` and keys."""
    return {
        "issuer": endpoints.issuer,
        "authorization_endpoint": endpoints.authorize,
        "token_endpoint": endpoints.token,
        "jwks_uri": endpoints.jwks,
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser", "name"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
    }
