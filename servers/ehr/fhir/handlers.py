"""HTTP handlers of the FHIR R4 API: parse the request, ask :mod:`.access` and :mod:`.store`, write JSON.

Interactions (R4 3.1.0): ``read`` (``GET [base]/[type]/[id]``), ``search-type`` (``GET [base]/[type]?...``
and ``POST [base]/[type]/_search`` with a form body, R4 3.1.1.1.1), ``capabilities`` (``GET
[base]/metadata``). Everything else answers 405. Errors become OperationOutcome in
:class:`servers.base.FHIRHandler`, the one place that happens.

Order of checks: a token in the query/body (400), content negotiation (406/415), the bearer token (401),
the resource type (404), the search parameters (400), the scopes and patient (403), then the store.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from s4s_jupyter.core.bearer import bearer_token, refuse_token_outside_header
from s4s_jupyter.core.errors import FHIRError, FHIRNotFound
from s4s_jupyter.core.introspection import IntrospectionResult
from s4s_jupyter.core.scopes import Interaction
from servers.base import FHIR_JSON, FHIRHandler
from servers.ehr.fhir.access import Grant, Introspector, check_search, grant_for, introspect
from servers.ehr.fhir.capability import capability_statement
from servers.ehr.fhir.negotiation import check_acceptable, check_body_type
from servers.ehr.fhir.paging import Cursor, decode, encode
from servers.ehr.fhir.query import ID_PATTERN, SearchQuery, parse_search
from servers.ehr.fhir.searchparams import RESOURCE_TYPES
from servers.ehr.fhir.store import FHIRStore, Page

FORM = frozenset({"application/x-www-form-urlencoded"})
JSON_BODY = frozenset({"application/fhir+json", "application/json"})


class FHIRBaseHandler(FHIRHandler):
    """Shared plumbing: settings, decoded arguments, negotiation, authentication."""

    def initialize(self, store: FHIRStore, introspector: Introspector, fhir_base: str,
                   oauth_urls: Mapping[str, str], clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.introspector = introspector
        self.fhir_base = fhir_base.rstrip("/")
        self.oauth_urls = oauth_urls
        self.clock = clock

    def _decode(self, raw: Mapping[str, list[bytes]]) -> dict[str, list[str]]:
        try:
            return {k: [v.decode("utf-8") for v in vs] for k, vs in raw.items()}
        except UnicodeDecodeError:
            raise FHIRError("parameters must be UTF-8") from None

    def query_args(self) -> dict[str, list[str]]:
        return self._decode(self.request.query_arguments)

    def negotiate(self, args: Mapping[str, list[str]]) -> None:
        refuse_token_outside_header(args)
        check_acceptable(self.request.headers.get("Accept"), [v for v in args.get("_format", []) if v])

    async def authenticate(self, args: Mapping[str, list[str]], body_has_token: bool = False
                           ) -> IntrospectionResult:
        token = bearer_token(self.request.headers.get("Authorization"), args, body_has_token)
        return await introspect(self.introspector, token, self.clock)

    def check_type(self, resource_type: str) -> None:
        if resource_type not in RESOURCE_TYPES:
            raise FHIRNotFound(f"resource type {resource_type!r} is not served here")

    def write_fhir(self, body: dict[str, Any], *, private: bool = True) -> None:
        if private:
            self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", FHIR_JSON)
        self.finish(json.dumps(body, separators=(",", ":")))

    def refuse_write(self) -> None:
        """Any write interaction: 415 for a body that is not FHIR JSON, else 405 (read-only server)."""
        if self.request.body:
            check_body_type(self.request.headers.get("Content-Type"), JSON_BODY)
        raise FHIRError(f"{self.request.method} is not supported: this FHIR API is read-only", status=405,
                        code="not-supported")

    async def post(self, *args: str) -> None:
        self.refuse_write()

    async def put(self, *args: str) -> None:
        self.refuse_write()

    async def patch(self, *args: str) -> None:
        self.refuse_write()

    async def delete(self, *args: str) -> None:
        self.refuse_write()


class MetadataHandler(FHIRBaseHandler):
    """``GET [base]/metadata``: the CapabilityStatement, without authentication (R4 3.1.0.11)."""

    async def get(self) -> None:
        self.negotiate(self.query_args())
        self.write_fhir(capability_statement(self.fhir_base, self.oauth_urls), private=False)


def _prefers_strict(prefer: str | None) -> bool:
    """``Prefer: handling=strict`` (RFC 7240; R4 3.1.1.5)."""
    if not prefer:
        return False
    return any(p.strip().lower().replace(" ", "") == "handling=strict"
               for part in prefer.split(",") for p in part.split(";"))


class SearchHandler(FHIRBaseHandler):
    """``GET [base]/[type]?params`` and ``POST [base]/[type]/_search`` (form body)."""

    async def get(self, resource_type: str) -> None:
        args = self.query_args()
        self.negotiate(args)
        token = await self.authenticate(args)
        await self.search(resource_type, args, token)

    async def post(self, *args: str) -> None:
        resource_type = args[0]
        if not self.request.path.endswith("/_search"):
            self.refuse_write()
            return
        query = self.query_args()
        check_body_type(self.request.headers.get("Content-Type"), FORM)
        body = self._decode(self.request.body_arguments)
        merged = {**query}
        for k, vs in body.items():
            merged.setdefault(k, []).extend(vs)
        self.negotiate(merged)
        token = await self.authenticate(query, body_has_token="access_token" in body)
        await self.search(resource_type, merged, token)

    async def search(self, resource_type: str, args: dict[str, list[str]], token: IntrospectionResult
                     ) -> None:
        self.check_type(resource_type)
        query = parse_search(resource_type, args, self.fhir_base)
        if query.unknown and _prefers_strict(self.request.headers.get("Prefer")):
            raise FHIRError(f"unknown search parameter(s): {', '.join(query.unknown)}", code="not-supported")
        grant = grant_for(token, resource_type, Interaction.SEARCH, self.fhir_base)
        check_search(grant, query)
        cursor = (None if query.cursor is None
                  else decode(self.store.paging_key, query, grant.patient, query.cursor))
        at = cursor or Cursor(query.offset, -1)
        page = await asyncio.get_running_loop().run_in_executor(None, lambda: self.store.search(
            resource_type, query.criteria, patient=grant.patient, alternatives=grant.alternatives,
            count=query.count, offset=at.offset, after=at.after, before=at.before,
            total=None if cursor is None else cursor.total))
        self.write_fhir(self.bundle(query, page, grant))

    def _link(self, query: SearchQuery, *, offset: int = 0, cursor: str | None = None) -> str:
        params = [*query.applied, ("_count", str(query.count))]
        if cursor is not None:
            params.append(("_cursor", cursor))
        elif offset:
            params.append(("_offset", str(offset)))
        return f"{self.fhir_base}/{query.resource_type}?{urlencode(params)}"

    def _cursor_link(self, query: SearchQuery, grant: Grant, cursor: Cursor) -> str:
        return self._link(query, cursor=encode(self.store.paging_key, query, grant.patient, cursor))

    def bundle(self, query: SearchQuery, page: Page, grant: Grant) -> dict[str, Any]:
        """A searchset Bundle (R4 3.1.1.2, 3.1.1.3): total, self/first/previous/next links, entries.

        ``next`` continues after the page's last match and ``previous`` ends before its first one (keyset
        cursors, :mod:`.paging`); a ``previous`` page that would start at 0 is the ``first`` link."""
        self_link = self._link(query, offset=query.offset, cursor=query.cursor)
        links = [{"relation": "self", "url": self_link}, {"relation": "first", "url": self._link(query)}]
        if query.count > 0:
            if page.offset > 0:
                back = page.offset - query.count
                if back > 0 and page.keys:
                    url = self._cursor_link(query, grant, Cursor(back, page.total, before=page.keys[0]))
                else:  # the first page, or an explicit _offset past the end: offsets (no key to go by)
                    url = self._link(query, offset=max(back, 0))
                links.append({"relation": "previous", "url": url})
            end = page.offset + len(page.resources)
            if page.keys and end < page.total:
                links.append({"relation": "next", "url": self._cursor_link(
                    query, grant, Cursor(end, page.total, after=page.keys[-1]))})
        entries: list[dict[str, Any]] = [
            {"fullUrl": f"{self.fhir_base}/{r['resourceType']}/{r['id']}", "resource": r,
             "search": {"mode": "match"}}
            for r in page.resources
        ]
        if query.unknown:
            entries.append({"resource": {"resourceType": "OperationOutcome", "issue": [
                {"severity": "warning", "code": "not-supported",
                 "diagnostics": f"search parameter {name!r} is not supported and was ignored"}
                for name in query.unknown]}, "search": {"mode": "outcome"}})
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "meta": {"lastUpdated": datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
            "type": "searchset",
            "total": page.total,
            "link": links,
        }
        if entries:
            bundle["entry"] = entries
        return bundle


class ReadHandler(FHIRBaseHandler):
    """``GET [base]/[type]/[id]`` (R4 3.1.0.2). Another patient's resource is 404, as if absent."""

    async def get(self, resource_type: str, rid: str) -> None:
        args = self.query_args()
        self.negotiate(args)
        token = await self.authenticate(args)
        self.check_type(resource_type)
        if not ID_PATTERN.match(rid):
            raise FHIRError(f"malformed id {rid!r}")
        grant = grant_for(token, resource_type, Interaction.READ, self.fhir_base)
        resource = await asyncio.get_running_loop().run_in_executor(None, lambda: self.store.read(
            resource_type, rid, patient=grant.patient, alternatives=grant.alternatives))
        if resource is None:
            raise FHIRNotFound(f"{resource_type}/{rid} is not known")
        meta = resource.get("meta", {})
        if "versionId" in meta:
            self.set_header("ETag", f'W/"{meta["versionId"]}"')
        self.write_fhir(resource)


class NotFoundHandler(FHIRBaseHandler):
    """Any other path under the FHIR base: 404 OperationOutcome."""

    async def get(self, path: str) -> None:
        raise FHIRNotFound(f"no FHIR endpoint at {self.request.path}")

    async def post(self, *args: str) -> None:
        raise FHIRNotFound(f"no FHIR endpoint at {self.request.path}")
