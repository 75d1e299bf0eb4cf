"""How the service finds the answer for a token: two :class:`Decider` implementations and a cache.

- :class:`RelayDecider`: RFC 7662 2.1 request to the EHR's introspection endpoint with the service's own
  client credentials (client_secret_basic); the EHR's answer is passed on in the SMART shape.
- :class:`FHIROracleDecider`: the EHR's FHIR API as the oracle. With a ``patient`` (the legacy form
  field), ``GET Patient/{patient}`` with the token: 200 means active for that patient, 401/403/404
  inactive. Without one, ``GET Patient`` with the token: an EHR filters that search to the token's patient
  (patient-bound scopes), so exactly one Patient means active for that patient; anything else inactive.
- :class:`CachedDecider`: reuses positive answers for a short TTL, never past ``exp``; keyed by a
  SHA-256 of the token (and patient), so tokens are not kept in the clear.

Errors at the EHR (unreachable, timeout, 5xx, garbage) raise :class:`UpstreamError`: the service
answers 502/504 and never ``active: true`` (fail closed).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from s4s_jupyter.core.errors import UpstreamError
from s4s_jupyter.core.introspection import IntrospectionResult
from servers.broker.authorizer import RemoteIntrospectionAuthorizer
from servers.broker.cache import TTLCache
from servers.broker.patients import FHIR_ID


class Decider(Protocol):
    async def introspect(self, token: str, patient: str | None = None) -> IntrospectionResult: ...


class RelayDecider:
    """Asks the EHR's RFC 7662 endpoint (reusing the broker's RFC 7662 client, without its cache)."""

    def __init__(self, url: str, client_id: str, client_secret: str, http: httpx.AsyncClient) -> None:
        self.client = RemoteIntrospectionAuthorizer(url, client_id, client_secret, http, cache_ttl=0)

    async def introspect(self, token: str, patient: str | None = None) -> IntrospectionResult:
        result = await self.client.introspect(token)
        if result.active and patient is not None and result.patient != patient:
            return IntrospectionResult(active=False)  # the legacy field asks "active for this patient?"
        return result


class FHIROracleDecider:
    def __init__(self, fhir_base: str, http: httpx.AsyncClient, *, scope: str, issuer: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.fhir_base = fhir_base.rstrip("/")
        self.http = http
        self.scope = scope
        self.issuer = issuer or self.fhir_base
        self.clock = clock

    async def _get(self, path: str, token: str, params: dict[str, str] | None = None) -> httpx.Response:
        try:
            r = await self.http.get(f"{self.fhir_base}/{path}", params=params,
                                    headers={"Authorization": f"Bearer {token}",
                                             "Accept": "application/fhir+json"})
        except httpx.TimeoutException:
            raise UpstreamError("the EHR's FHIR API timed out", status=504) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the EHR's FHIR API cannot be reached ({type(exc).__name__})") from None
        if r.status_code >= 500:
            raise UpstreamError(f"the EHR's FHIR API answered {r.status_code}",
                                status=503 if r.status_code == 503 else 502,
                                retry_after=r.headers.get("retry-after"))
        return r

    def _active(self, patient: str) -> IntrospectionResult:
        return IntrospectionResult(active=True, scope=self.scope, patient=patient, iss=self.issuer,
                                   token_type="Bearer", iat=int(self.clock()))

    @staticmethod
    def _json(r: httpx.Response) -> Any:
        try:
            return r.json()
        except ValueError:
            raise UpstreamError("the EHR's FHIR API answered something else than JSON") from None

    async def introspect(self, token: str, patient: str | None = None) -> IntrospectionResult:
        if patient is not None:
            if not FHIR_ID.match(patient):
                return IntrospectionResult(active=False)
            r = await self._get(f"Patient/{patient}", token)
            if r.status_code != 200:
                return IntrospectionResult(active=False)
            data = self._json(r)
            if not isinstance(data, dict) or data.get("resourceType") != "Patient" \
                    or data.get("id") != patient:
                raise UpstreamError("the EHR's FHIR API answered a Patient read with something else")
            return self._active(patient)
        r = await self._get("Patient", token, {"_count": "2"})
        if r.status_code != 200:
            return IntrospectionResult(active=False)
        data = self._json(r)
        if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
            raise UpstreamError("the EHR's FHIR API answered a Patient search with something else")
        ids = [e.get("resource", {}).get("id") for e in data.get("entry") or []
               if isinstance(e, dict) and isinstance(e.get("resource"), dict)
               and e["resource"].get("resourceType") == "Patient"]
        if len(ids) == 1 and isinstance(ids[0], str) and FHIR_ID.match(ids[0]):
            return self._active(ids[0])
        return IntrospectionResult(active=False)


class CachedDecider:
    def __init__(self, inner: Decider, ttl: float, *, clock: Callable[[], float] = time.time) -> None:
        self.inner = inner
        self.clock = clock
        self.cache: TTLCache[str, IntrospectionResult] = TTLCache(ttl, clock=clock)

    async def introspect(self, token: str, patient: str | None = None) -> IntrospectionResult:
        key = hashlib.sha256(f"{patient or ''}\x00{token}".encode()).hexdigest()
        cached = self.cache.get(key)
        now = self.clock()
        if cached is not None and (cached.exp is None or cached.exp > now):
            return cached
        result = await self.inner.introspect(token, patient)
        if result.active and (result.exp is None or result.exp > now):
            self.cache.put(key, result, None if result.exp is None else result.exp - now)
        elif result.active:
            return IntrospectionResult(active=False)  # an "active" answer already past its exp
        return result
