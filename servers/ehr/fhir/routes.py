"""The URL rules of the FHIR R4 API, mounted by the EHR's app factory (``servers/ehr/app.py``).

The EHR serves at ``http://host:port``; the FHIR base is ``{url}/fhir``. Paths: ``/fhir/metadata``,
``/fhir/{type}``, ``/fhir/{type}/_search``, ``/fhir/{type}/{id}``, and a 404 OperationOutcome for anything
else under ``/fhir/`` except ``/fhir/.well-known/`` (the authorization server's SMART configuration).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from servers.ehr.fhir.access import Introspector
from servers.ehr.fhir.handlers import MetadataHandler, NotFoundHandler, ReadHandler, SearchHandler
from servers.ehr.fhir.store import FHIRStore

_TYPE = r"([A-Z][A-Za-z]+)"


def fhir_routes(store: FHIRStore, introspector: Introspector, fhir_base: str,
                oauth_urls: Mapping[str, str] | None = None, *, clock: Callable[[], float] = time.time,
                metadata_handler: type[MetadataHandler] = MetadataHandler
                ) -> list[tuple[str, type, dict[str, Any]]]:
    """Tornado URL rules for the FHIR API.

    ``introspector.introspect(token)`` answers RFC 7662 for a bearer token (sync or async);
    ``oauth_urls`` has the keys ``authorize``, ``token``, ``introspect``, ``revoke`` for the
    CapabilityStatement's SMART ``oauth-uris`` extension (default: the EHR's own layout,
    :class:`servers.ehr.oauth.endpoints.OAuthEndpoints`); ``clock`` gives POSIX seconds (token ``exp``);
    ``metadata_handler`` answers ``/metadata`` (a subclass lists mounted imaging resources too).
    """
    if oauth_urls is None:
        from servers.ehr.oauth.endpoints import OAuthEndpoints

        ep = OAuthEndpoints.from_fhir_base(fhir_base)
        oauth_urls = {"authorize": ep.authorize, "token": ep.token, "introspect": ep.introspect,
                      "revoke": ep.revoke}
    kwargs: dict[str, Any] = {"store": store, "introspector": introspector, "fhir_base": fhir_base,
                              "oauth_urls": dict(oauth_urls), "clock": clock}
    return [
        (r"/fhir/metadata/?", metadata_handler, kwargs),
        (rf"/fhir/{_TYPE}/?", SearchHandler, kwargs),
        (rf"/fhir/{_TYPE}/(_search)", SearchHandler, kwargs),
        (rf"/fhir/{_TYPE}/([^/]+)", ReadHandler, kwargs),
        (r"/fhir/(?!\.well-known/)(.*)", NotFoundHandler, kwargs),
    ]
