"""``POST /introspect`` (RFC 7662 2.1 request, 2.2 answer in the SMART App Launch 2.x "Token
Introspection" shape) and a small ``GET /`` description."""

from __future__ import annotations

from typing import Any

from s4s_jupyter.core.errors import OAuthError, UpstreamError
from s4s_jupyter.core.introspection import IntrospectionResult
from servers.base import OAuthHandler
from servers.introspection.callers import CallerUnauthorized, basic_credentials
from servers.introspection.service import IntrospectionService


class IntrospectHandler(OAuthHandler):
    def initialize(self, service: IntrospectionService) -> None:
        self.service = service

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if isinstance(self.error_from(kwargs), CallerUnauthorized):
            self.set_header("WWW-Authenticate", 'Basic realm="introspection", charset="UTF-8"')
        super().write_error(status_code, **kwargs)

    async def _authenticate(self) -> str:
        """The calling client's id; raises :class:`CallerUnauthorized` (401)."""
        header = self.request.headers.get("Authorization", "")
        if not header:
            raise CallerUnauthorized("the caller must authenticate (client_secret_basic or a bearer token)")
        creds = basic_credentials(header)
        if creds is not None:
            return self.service.callers.by_secret(*creds).client_id
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CallerUnauthorized("unsupported Authorization scheme")
        result = await self.service.caller_token(token.strip())
        if not result.active:
            raise CallerUnauthorized("the caller's bearer token is not active")
        return self.service.callers.by_client_id(result.client_id).client_id

    async def post(self) -> None:
        try:
            await self._authenticate()
        except UpstreamError as exc:
            raise OAuthError("the EHR cannot check the caller's token now", error="temporarily_unavailable",
                             status=exc.status) from None
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise OAuthError("the request body must be application/x-www-form-urlencoded (RFC 7662 2.1)")
        token = self.get_body_argument("token", None)
        if not token:
            raise OAuthError("the token parameter is required (RFC 7662 2.1)")
        patient = self.get_body_argument("patient", None) or None
        try:
            result: IntrospectionResult = await self.service.introspect(token, patient)
        except UpstreamError as exc:
            # fail closed: never an active answer without the EHR's word
            raise OAuthError(f"the EHR cannot answer now: {exc.message}", error="temporarily_unavailable",
                             status=exc.status) from None
        self.write_json(result.to_json())


class InfoHandler(OAuthHandler):
    def initialize(self, service: IntrospectionService) -> None:
        self.service = service

    def get(self) -> None:
        self.write_json({"service": "s4s token introspection", "introspection_endpoint":
                         self.service.introspection_url, "mode": self.service.settings.mode.value})
