"""Bearer tokens on the resource-server side (RFC 6750): where a token may come from, and when it counts.

Shared by every resource server of the project (the EHR's FHIR API, the broker), so they refuse the same
requests in the same words.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from s4s_jupyter.core.errors import InvalidToken, MissingToken, OAuthError
from s4s_jupyter.core.introspection import IntrospectionResult


def refuse_token_outside_header(query: Mapping[str, object], body_has_token: bool = False) -> None:
    """400 for ``access_token`` in the query string or a form body (RFC 6750 2.2, 2.3): never used.

    Tokens in URLs end up in logs, proxies and browser history; a server that refuses them outright
    teaches clients not to send them.
    """
    if "access_token" in query or body_has_token:
        raise OAuthError("access tokens are accepted in the Authorization header only (RFC 6750 2.1)",
                         error="invalid_request", status=400)


def bearer_token(authorization: str | None, query: Mapping[str, object] | None = None,
                 body_has_token: bool = False) -> str:
    """The token of an ``Authorization: Bearer`` header (RFC 6750 2.1).

    Raises :class:`OAuthError` (400) for a token sent any other way, :class:`MissingToken` (401, a
    challenge without error code) when there is no header, :class:`InvalidToken` (401) when malformed.
    """
    refuse_token_outside_header(query or {}, body_has_token)
    if not authorization:
        raise MissingToken("a bearer token is required")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise InvalidToken("the Authorization header must be 'Bearer <token>'")
    return token


def require_active(result: IntrospectionResult, now: float | None = None) -> IntrospectionResult:
    """``result`` if the token is active and unexpired at ``now``, else :class:`InvalidToken` (401)."""
    if not result.active:
        raise InvalidToken("the access token is not active")
    if result.exp is not None and result.exp <= (time.time() if now is None else now):
        raise InvalidToken("the access token has expired")
    return result
