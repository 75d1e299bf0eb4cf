"""The EHR's Tornado application: the SMART authorization server and the FHIR R4 API in one app.

:func:`make_app` builds everything from an :class:`~servers.ehr.settings.EHRSettings` and the URL the app
is served at; nothing is global, so tests run several EHRs in one process. The app's settings carry an
:class:`EHRServices` under ``"s4s_ehr"`` for parts mounted later (the broker inside the EHR) that need the
in-process :class:`~servers.ehr.oauth.introspector.TokenIntrospector`.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

import tornado.web

from servers.base import log_request
from servers.demo_data.clinical import is_caregiver
from servers.runtime import CLEANUP_KEY

from .fhir.handlers import MetadataHandler
from .fhir.routes import fhir_routes
from .fhir.store import STORE_FILE, build_store
from .imaging import ImagingMetadataHandler, mount_imaging
from .oauth.clients import ClientRegistry
from .oauth.endpoints import OAuthEndpoints
from .oauth.handlers import auth_routes
from .oauth.idtoken import IdTokenSigner
from .oauth.introspector import TokenIntrospector
from .oauth.pages import AuthContext
from .oauth.server import SmartAuthorizationServer
from .oauth.store import OAuthStore
from .oauth.throttle import LoginThrottle
from .oauth.users import fhir_user_reference
from .settings import EHRSettings

log = logging.getLogger("s4s.ehr")

#: key of :class:`EHRServices` in ``Application.settings``
SERVICES_KEY = "s4s_ehr"


@dataclass(frozen=True)
class EHRServices:
    """The EHR's parts, for code mounted in the same application."""

    endpoints: OAuthEndpoints
    store: OAuthStore
    introspector: TokenIntrospector
    authorization_server: SmartAuthorizationServer


def build_authorization_server(settings: EHRSettings, base_url: str) -> SmartAuthorizationServer:
    """The authorization server with its store, seeded with the plan's users and the settings' clients."""
    endpoints = OAuthEndpoints(base_url)
    settings.ehr_dir.mkdir(parents=True, exist_ok=True)
    store = OAuthStore(settings.oauth_db_path, settings.clock)
    for u in settings.plan.users:
        store.add_user(u.username, u.password, u.display_name, u.patient_ids,
                       fhir_user_reference(u.username, u.patient_ids, caregiver=is_caregiver(u)))
    signer = IdTokenSigner.load_or_create(settings.signing_key_path, endpoints.issuer)
    return SmartAuthorizationServer(settings, endpoints, ClientRegistry(settings.clients), store, signer)




def make_app(settings: EHRSettings, base_url: str) -> tornado.web.Application:
    """Build the EHR served at ``base_url`` (FHIR base ``{base_url}/fhir``, OAuth under ``/auth``; with
    ``settings.pacs_url`` also ImagingStudy and DICOMweb at ``{base_url}/dicom-web``)."""
    # Authlib logs issued tokens at DEBUG; tokens never go to logs, whatever --log-level says
    authlib_log = logging.getLogger("authlib")
    authlib_log.setLevel(max(authlib_log.getEffectiveLevel(), logging.INFO))
    if settings.auto_approve:
        log.warning("*** --auto-approve is ON (demo only): the EHR grants every authorization request with a "
                    "loopback redirect URI WITHOUT login or consent ***")
    server = build_authorization_server(settings, base_url)
    throttle = LoginThrottle(settings.oauth_db_path, settings.clock,
                             account_limit=settings.login_account_failures,
                             address_limit=settings.login_address_failures,
                             window=settings.login_failure_window)
    ctx = AuthContext(server, settings.plan, throttle)
    endpoints = server.endpoints
    fhir_store = build_store(settings.plan, settings.ehr_dir / STORE_FILE)
    oauth_urls = {"authorize": endpoints.authorize, "token": endpoints.token,
                  "introspect": endpoints.introspect, "revoke": endpoints.revoke}
    cleanups: list[Any] = [server.store.close, throttle.close, fhir_store.close]
    # the authorization server's rules first: /fhir/.well-known/smart-configuration is its
    routes: list[Any] = auth_routes(ctx)
    metadata_handler: type[MetadataHandler] = MetadataHandler
    if settings.pacs_url:
        # the broker's ImagingStudy/Endpoint rules before the generic /fhir/{type} ones (first match wins)
        mount = mount_imaging(settings, base_url, server.introspector, fhir_store)
        routes += mount.routes
        cleanups += mount.cleanups
        metadata_handler = ImagingMetadataHandler
        log.info("EHR serves imaging itself: PACS %s, DICOMweb at %s", settings.pacs_url, mount.dicomweb_base)
    routes += fhir_routes(fhir_store, server.introspector, endpoints.fhir_base, oauth_urls,
                          clock=settings.clock, metadata_handler=metadata_handler)
    app = tornado.web.Application(
        routes,
        cookie_secret=settings.cookie_secret or secrets.token_urlsafe(32),
        log_function=log_request,
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict", "path": "/auth"},
    )
    app.settings[SERVICES_KEY] = EHRServices(server.endpoints, server.store, server.introspector, server)
    app.settings[CLEANUP_KEY] = cleanups
    return app
