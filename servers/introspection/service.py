"""The Token Introspection Service's domain: the configured decider (resolved once), the callers."""

from __future__ import annotations

import asyncio

import httpx

from s4s_jupyter.core.errors import UpstreamError
from s4s_jupyter.core.introspection import IntrospectionResult
from servers.broker.ehr_client import EHRClient
from servers.introspection.callers import CallerRegistry
from servers.introspection.deciders import CachedDecider, Decider, FHIROracleDecider, RelayDecider
from servers.introspection.settings import IntrospectionSettings, Mode


class IntrospectionService:
    def __init__(self, settings: IntrospectionSettings, http: httpx.AsyncClient, base_url: str) -> None:
        self.settings = settings
        self.http = http
        self.callers = CallerRegistry(settings.callers)
        self.introspection_url = base_url.rstrip("/") + "/introspect"
        self.ehr = EHRClient(settings.ehr_fhir, settings.client_id, settings.client_secret, http)
        self._relay: RelayDecider | None = None
        self._decider: Decider | None = None
        self._lock = asyncio.Lock()

    async def _resolve(self) -> Decider:
        async with self._lock:
            if self._decider is not None:
                return self._decider
            mode = self.settings.mode
            endpoint: str | None = None
            if mode != Mode.FHIR_ORACLE:
                config = await self.ehr.smart_configuration()
                endpoint = config.get("introspection_endpoint") if isinstance(
                    config.get("introspection_endpoint"), str) else None
                if endpoint is None and mode == Mode.RELAY:
                    raise UpstreamError("the EHR's smart-configuration names no introspection_endpoint")
            if endpoint is not None:
                self._relay = RelayDecider(endpoint, self.settings.client_id, self.settings.client_secret,
                                           self.http)
                inner: Decider = self._relay
            else:
                inner = FHIROracleDecider(self.settings.ehr_fhir, self.http, scope=self.settings.oracle_scope)
            self._decider = CachedDecider(inner, self.settings.cache_ttl)
            return self._decider

    async def introspect(self, token: str, patient: str | None = None) -> IntrospectionResult:
        decider = self._decider or await self._resolve()
        return await decider.introspect(token, patient)

    async def caller_token(self, token: str) -> IntrospectionResult:
        """Introspect a caller's own bearer token at the EHR (relay mode only; never cached)."""
        if self._decider is None:
            await self._resolve()
        if self._relay is None:
            return IntrospectionResult(active=False)
        return await self._relay.introspect(token)
