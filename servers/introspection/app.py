"""Wiring of the Token Introspection Service: ``make_app(settings, base_url)``; ``POST {base}/introspect``."""

from __future__ import annotations

from typing import Any

import httpx
import tornado.web

from servers.base import log_request
from servers.broker.app import quiet_httpx
from servers.broker.dicomweb_upstream import no_cookies
from servers.introspection.handlers import InfoHandler, IntrospectHandler
from servers.introspection.service import IntrospectionService
from servers.introspection.settings import IntrospectionSettings
from servers.runtime import CLEANUP_KEY


def make_app(settings: IntrospectionSettings, base_url: str) -> tornado.web.Application:
    quiet_httpx()
    http = httpx.AsyncClient(timeout=httpx.Timeout(settings.timeout), trust_env=False, cookies=no_cookies())
    service = IntrospectionService(settings, http, base_url)
    kw = {"service": service}
    app_settings: dict[str, Any] = {CLEANUP_KEY: [http.aclose], "introspection_service": service}
    return tornado.web.Application([(r"/introspect", IntrospectHandler, kw), (r"/", InfoHandler, kw)],
                                   log_function=log_request, **app_settings)
