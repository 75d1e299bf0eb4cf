"""Who may do what: the broker's ``Authorizer`` protocol and the access decision built on it.

An :class:`Authorizer` turns a bearer token into an RFC 7662 introspection answer. Two implementations:

- :class:`RemoteIntrospectionAuthorizer` asks an RFC 7662 endpoint (the Token Introspection Service,
  or the EHR's own) with the broker's client credentials (client_secret_basic, RFC 7662 2.1);
- :class:`InProcessAuthorizer` wraps an object with ``introspect(token)`` (the EHR's
  ``TokenIntrospector``) when the EHR mounts the broker's handlers itself.

:func:`require_access` applies SMART App Launch 2.x and the SMART Imaging Access checks to an answer:
active and unexpired (else 401), a ``patient/`` scope granting the ImagingStudy interaction (else 403,
``insufficient_scope``, RFC 6750 3.1), a patient context (else 403) equal to the requested patient when
one is named (else 403). ``user/`` and ``system/`` grants never open imaging: the broker supports App
Launch only, and each grant keeps its own context (the IG's "Token validation and access enforcement").
Unreachable or garbled introspection raises :class:`UpstreamError`: the broker fails closed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from s4s_jupyter.core.bearer import require_active
from s4s_jupyter.core.errors import FHIRForbidden, OAuthError, UpstreamError
from s4s_jupyter.core.introspection import IntrospectionResult
from s4s_jupyter.core.scopes import Interaction, ScopeContext, ScopeSet
from servers.broker.cache import TTLCache

RESOURCE_TYPE = "ImagingStudy"


class Authorizer(Protocol):
    """Introspects bearer tokens for the broker."""

    async def introspect(self, token: str) -> IntrospectionResult: ...


class SupportsIntrospect(Protocol):
    def introspect(self, token: str) -> IntrospectionResult | Awaitable[IntrospectionResult]: ...


class InProcessAuthorizer:
    """An :class:`Authorizer` over an in-process introspector (the EHR mounting the broker)."""

    def __init__(self, introspector: SupportsIntrospect) -> None:
        self.introspector = introspector

    async def introspect(self, token: str) -> IntrospectionResult:
        result = self.introspector.introspect(token)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, IntrospectionResult):
            raise UpstreamError("in-process introspection answered something else than a result")
        return result


class RemoteIntrospectionAuthorizer:
    """An :class:`Authorizer` calling an RFC 7662 endpoint with the broker's own client credentials.

    Positive answers may be reused for ``cache_ttl`` seconds (never past ``exp``); the cache key is a
    SHA-256 of the token, so no token is kept in memory in the clear longer than a request.
    """

    def __init__(self, url: str, client_id: str, client_secret: str, http: httpx.AsyncClient, *,
                 cache_ttl: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.auth = httpx.BasicAuth(client_id, client_secret)
        self.http = http
        self.clock = clock
        self.cache: TTLCache[str, IntrospectionResult] = TTLCache(cache_ttl)

    async def introspect(self, token: str) -> IntrospectionResult:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self.cache.get(key)
        if cached is not None and (cached.exp is None or cached.exp > self.clock()):
            return cached
        try:
            r = await self.http.post(self.url, data={"token": token, "token_type_hint": "access_token"},
                                     auth=self.auth, headers={"Accept": "application/json"})
        except httpx.TimeoutException:
            raise UpstreamError("the introspection endpoint timed out", status=504) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the introspection endpoint cannot be reached ({type(exc).__name__})"
                                ) from None
        if r.status_code != 200:
            raise UpstreamError(f"the introspection endpoint answered {r.status_code}")
        try:
            data = r.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UpstreamError("the introspection endpoint answered something else than JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError("the introspection endpoint answered something else than an object")
        result = IntrospectionResult.from_json(data)
        if result.active:
            life = self.cache.ttl if result.exp is None else min(self.cache.ttl, result.exp - self.clock())
            self.cache.put(key, result, life)
        return result


@dataclass(frozen=True)
class Access:
    """What an authorized request may touch: one patient, for one client."""

    patient: str
    client_id: str | None
    scope: str


def require_access(result: IntrospectionResult, interaction: Interaction | str, *,
                   patient: str | None = None, params: Mapping[str, str | list[str]] | None = None,
                   now: float | None = None) -> Access:
    """The access ``result`` grants for ``interaction`` on ImagingStudy, or the error to answer.

    ``patient``: the FHIR patient the request names (a search's ``patient``), checked against the
    token's patient context. ``params``: the search parameters the broker honours, for v2 scopes with a
    query (``patient/ImagingStudy.rs?identifier=...``).
    """
    require_active(result, now)
    scopes = ScopeSet.parse(result.scope, strict=False)
    if not scopes.permits(ScopeContext.PATIENT, RESOURCE_TYPE, interaction, params):
        raise OAuthError(f"the token's scopes do not allow {RESOURCE_TYPE} "
                         f"{'search' if Interaction(interaction) == Interaction.SEARCH else 'read'} "
                         "in a patient context", error="insufficient_scope", status=403)
    if not result.patient:
        raise FHIRForbidden("the access token has no patient context")
    if patient is not None and patient != result.patient:
        raise FHIRForbidden("the access token is not bound to this patient")
    return Access(result.patient, result.client_id, result.scope)
