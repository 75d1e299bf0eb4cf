"""What every broker handler does first: read the bearer token, introspect it, decide, and audit."""

from __future__ import annotations

from collections.abc import Mapping

import tornado.web

from s4s_jupyter.core.bearer import bearer_token
from s4s_jupyter.core.errors import InvalidToken
from s4s_jupyter.core.introspection import IntrospectionResult
from s4s_jupyter.core.scopes import Interaction
from servers.broker.audit import AuditRecord
from servers.broker.authorizer import Access, require_access
from servers.broker.context import BrokerContext


class GuardedMixin(tornado.web.RequestHandler):
    """Token handling and the audit record of one request. ``kind``: the audit event kind."""

    ctx: BrokerContext
    record: AuditRecord | None = None
    audited: bool = False

    def initialize(self, ctx: BrokerContext) -> None:
        self.ctx = ctx

    def start_audit(self, kind: str) -> AuditRecord:
        self.record = AuditRecord(kind, self.request.path, address=self.request.remote_ip)
        return self.record

    async def introspect(self) -> IntrospectionResult:
        """Introspect the request's bearer token; 401 unless it is active (RFC 6750 3.1)."""
        token = bearer_token(self.request.headers.get("Authorization"), self.request.query_arguments)
        result = await self.ctx.authorizer.introspect(token)
        if not result.active:
            raise InvalidToken("the access token is not active")
        if self.record is not None:
            self.record.client_id = result.client_id
            self.record.patient = result.patient
        return result

    async def access(self, interaction: Interaction, *, patient: str | None = None,
                     params: Mapping[str, str | list[str]] | None = None,
                     result: IntrospectionResult | None = None) -> Access:
        result = result or await self.introspect()
        return require_access(result, interaction, patient=patient, params=params)

    def finish_audit(self, status: int, detail: str = "") -> None:
        if self.record is not None and not self.audited:
            self.audited = True
            self.ctx.audit.record(self.record, status, detail)

    def on_finish(self) -> None:
        self.finish_audit(self.get_status(), self._reason)

    def query_pairs(self) -> list[tuple[str, str]]:
        """The query string's ``(name, value)`` pairs, in order (values decoded as UTF-8)."""
        out: list[tuple[str, str]] = []
        for name, vals in self.request.query_arguments.items():
            for v in vals:
                out.append((name, v.decode("utf-8", "replace")))
        return out
