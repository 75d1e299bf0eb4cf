"""The broker as a client of the EHR: its SMART configuration, and its own client_credentials token.

- ``{ehr_fhir}/.well-known/smart-configuration`` (SMART App Launch 2.x "Metadata") names the token and
  introspection endpoints; the broker reads it once (and again after a failure).
- The broker's own access token comes from the client_credentials grant (RFC 6749 4.4, SMART Backend
  Services scopes) with client_secret_basic (RFC 6749 2.3.1); it is reused until shortly before it
  expires and never logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from s4s_jupyter.core.errors import UpstreamError

#: the broker reads Patient resources only
BROKER_SCOPE = "system/Patient.rs"


class EHRClient:
    def __init__(self, fhir_base: str, client_id: str, client_secret: str, http: httpx.AsyncClient, *,
                 scope: str = BROKER_SCOPE, clock: Callable[[], float] = time.time) -> None:
        self.fhir_base = fhir_base.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.http = http
        self.scope = scope
        self.clock = clock
        self._config: dict[str, Any] | None = None
        self._token: tuple[str, float] | None = None

    async def _get_json(self, url: str, what: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            r = await self.http.request(kwargs.pop("method", "GET"), url, **kwargs)
        except httpx.TimeoutException:
            raise UpstreamError(f"the EHR timed out ({what})", status=504) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the EHR cannot be reached ({what}: {type(exc).__name__})") from None
        if r.status_code == 503:
            raise UpstreamError(f"the EHR is unavailable ({what})", status=503,
                                retry_after=r.headers.get("retry-after"))
        try:
            return r.status_code, r.json() if r.content else None
        except ValueError:
            raise UpstreamError(f"the EHR answered something else than JSON ({what})") from None

    async def smart_configuration(self) -> dict[str, Any]:
        """The EHR's SMART configuration document (cached after the first success)."""
        if self._config is None:
            status, data = await self._get_json(f"{self.fhir_base}/.well-known/smart-configuration",
                                                "smart-configuration", headers={"Accept": "application/json"})
            if status != 200 or not isinstance(data, dict) or not isinstance(data.get("token_endpoint"), str):
                raise UpstreamError(f"the EHR's smart-configuration is unusable ({status})")
            self._config = data
        return self._config

    async def access_token(self, *, renew: bool = False) -> str:
        """The broker's own bearer token for the EHR's FHIR API."""
        if self._token and not renew and self._token[1] > self.clock() + 30:
            return self._token[0]
        if not self.client_id or not self.client_secret:
            raise UpstreamError("the broker has no client credentials for the EHR")
        config = await self.smart_configuration()
        status, data = await self._get_json(
            config["token_endpoint"], "client_credentials token", method="POST",
            data={"grant_type": "client_credentials", "scope": self.scope},
            auth=httpx.BasicAuth(self.client_id, self.client_secret), headers={"Accept": "application/json"})
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            error = data.get("error") if isinstance(data, dict) else None
            raise UpstreamError(f"the EHR refused the broker's client_credentials grant ({status} {error})")
        lifetime = data.get("expires_in")
        expires = self.clock() + (float(lifetime) if isinstance(lifetime, int | float) else 300.0)
        self._token = (data["access_token"], expires)
        return self._token[0]

    async def read(self, resource_type: str, rid: str) -> dict[str, Any] | None:
        """``GET {fhir}/{type}/{id}`` with the broker's token: the resource, or None for 404/410."""
        for attempt in (0, 1):
            token = await self.access_token(renew=attempt == 1)
            status, data = await self._get_json(
                f"{self.fhir_base}/{resource_type}/{rid}", f"{resource_type} read",
                headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})
            if status == 401 and attempt == 0:
                continue  # the token may have been revoked or expired early: get a new one once
            if status in (404, 410):
                return None
            if status != 200 or not isinstance(data, dict) or data.get("resourceType") != resource_type:
                raise UpstreamError(f"the EHR answered {status} to a {resource_type} read")
            return data
        raise UpstreamError("the EHR refuses the broker's token")  # pragma: no cover - loop exits above
