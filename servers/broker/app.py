"""Wiring of the FHIR Broker: ``make_app(settings, base_url)`` for the broker alone, and
``broker_routes`` + ``build_context`` for an application (the EHR) that mounts the broker's handlers
with its own :class:`~servers.broker.authorizer.Authorizer` (an in-process one).

URL layout: FHIR base ``{base_url}/fhir`` (ImagingStudy, Endpoint, metadata, smart-configuration) and
DICOMweb base ``{base_url}/dicom-web``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import httpx
import tornado.web

from s4s_jupyter.core.imaging_study import MappingOptions, wado_endpoint
from servers.base import log_request
from servers.broker.audit import AuditTrail
from servers.broker.authorizer import Authorizer, RemoteIntrospectionAuthorizer
from servers.broker.context import BrokerContext
from servers.broker.dicomweb_handlers import DICOMwebProxyHandler
from servers.broker.dicomweb_upstream import DICOMwebUpstream, no_cookies
from servers.broker.ehr_client import EHRClient
from servers.broker.fhir_handlers import (
    EndpointReadHandler,
    ImagingStudyReadHandler,
    ImagingStudySearchHandler,
    MetadataHandler,
    SmartConfigurationHandler,
)
from servers.broker.local_pacs import LocalPACS
from servers.broker.patients import FHIRPatientDirectory, IdentifierRule, PatientDirectory
from servers.broker.rewrite import URLRewriter
from servers.broker.service import ImagingService
from servers.broker.settings import DICOMWEB_PATH, FHIR_PATH, BrokerSettings
from servers.broker.upstream import Upstream
from servers.runtime import CLEANUP_KEY


def build_context(settings: BrokerSettings, base_url: str, *, authorizer: Authorizer | None = None,
                  upstream: Upstream | None = None, patients: PatientDirectory | None = None,
                  fhir_path: str = FHIR_PATH, dicomweb_path: str = DICOMWEB_PATH,
                  http: httpx.AsyncClient | None = None) -> tuple[BrokerContext, list[Any]]:
    """The broker's shared objects, and the cleanups to run when its server stops.

    Without ``authorizer``, a :class:`RemoteIntrospectionAuthorizer` on ``settings.introspection_url``;
    without ``patients``, a :class:`FHIRPatientDirectory` reading ``settings.ehr_fhir`` with the broker's
    client credentials; without ``upstream``, a :class:`DICOMwebUpstream` on ``settings.pacs_url``.
    """
    base = base_url.rstrip("/")
    cleanups: list[Any] = []
    if http is None:
        http = httpx.AsyncClient(timeout=httpx.Timeout(settings.upstream_timeout), trust_env=False,
                                 cookies=no_cookies())
        cleanups.append(http.aclose)
    ehr = EHRClient(settings.ehr_fhir, settings.client_id, settings.client_secret, http) \
        if settings.ehr_fhir else None
    if authorizer is None:
        if not settings.introspection_url:
            raise ValueError("the broker needs an introspection URL or an in-process authorizer")
        authorizer = RemoteIntrospectionAuthorizer(settings.introspection_url, settings.client_id,
                                                   settings.client_secret, http,
                                                   cache_ttl=settings.introspection_cache_ttl)
    if patients is None:
        if ehr is None:
            raise ValueError("the broker needs the EHR's FHIR base or a patient directory")
        patients = FHIRPatientDirectory(ehr, IdentifierRule(settings.patient_identifier),
                                        ttl=settings.patient_cache_ttl)
    if upstream is None:
        dw = DICOMwebUpstream(settings.pacs_url, timeout=settings.upstream_timeout,
                              authorization=settings.upstream_authorization,
                              max_json_bytes=settings.max_metadata_bytes, unix_socket=settings.pacs_socket)
        cleanups.append(dw.aclose)
        upstream = dw
    local_pacs = None
    if settings.pacs_store is not None:
        local_pacs = LocalPACS(settings.pacs_store, settings.pacs_url)
        cleanups.append(local_pacs.close)
    dicomweb_base = base + dicomweb_path
    service = ImagingService(upstream, patients, URLRewriter(upstream.base_url, dicomweb_base),
                             endpoint_id=settings.endpoint_id, owner_ttl=settings.owner_cache_ttl,
                             mapping=MappingOptions(default_tz=settings.mapping_tz))
    audit_path = Path(settings.data_dir) / "audit.jsonl" if settings.data_dir else None
    ctx = BrokerContext(
        settings=settings, service=service, authorizer=authorizer,
        audit=AuditTrail(audit_path, observer=f"s4s FHIR broker at {base}"), ehr=ehr,
        fhir_base=base + fhir_path, dicomweb_base=dicomweb_base,
        endpoint=wado_endpoint(settings.endpoint_id, dicomweb_base, name="s4s broker WADO-RS"),
        dicomweb_path=dicomweb_path, local_pacs=local_pacs)
    return ctx, cleanups


def broker_routes(ctx: BrokerContext, *, discovery: bool = True) -> list[tuple[str, type, dict[str, Any]]]:
    """The broker's Tornado route rules, under ``ctx``'s FHIR and DICOMweb path prefixes.

    ``discovery=False`` leaves out ``/metadata`` and ``/.well-known/smart-configuration`` (an EHR
    mounting the broker under its own FHIR base serves those itself).
    """
    fhir = re.escape(ctx.fhir_base[len(_origin(ctx.fhir_base)):])
    dw = re.escape(ctx.dicomweb_path)
    kw = {"ctx": ctx}
    rules: list[tuple[str, type, dict[str, Any]]] = [
        (rf"{fhir}/ImagingStudy/?", ImagingStudySearchHandler, kw),
        (rf"{fhir}/ImagingStudy/([^/]+)", ImagingStudyReadHandler, kw),
        (rf"{fhir}/Endpoint/([^/]+)", EndpointReadHandler, kw),
        (rf"{dw}(/.*)?", DICOMwebProxyHandler, kw),
    ]
    if discovery:
        rules += [
            (rf"{fhir}/metadata", MetadataHandler, kw),
            (rf"{fhir}/\.well-known/smart-configuration", SmartConfigurationHandler, kw),
        ]
    return rules


def quiet_httpx() -> None:
    """httpx logs every request URL at INFO; the broker's carry PatientIDs in QIDO query strings, and
    query strings are never logged (servers/base.py). Its warnings still show."""
    logger = logging.getLogger("httpx")
    if logger.level < logging.WARNING:
        logger.setLevel(logging.WARNING)


def _origin(url: str) -> str:
    m = re.match(r"^[a-z]+://[^/]+", url)
    return m.group(0) if m else ""


def make_app(settings: BrokerSettings, base_url: str, **overrides: Any) -> tornado.web.Application:
    """The broker alone at ``base_url``. ``overrides`` go to :func:`build_context` (tests pass an
    in-process authorizer or another upstream)."""
    quiet_httpx()
    ctx, cleanups = build_context(settings, base_url, **overrides)
    settings_kw: dict[str, Any] = {CLEANUP_KEY: cleanups}
    app = tornado.web.Application(broker_routes(ctx), log_function=log_request, **settings_kw)
    app.settings["broker_context"] = ctx
    return app
