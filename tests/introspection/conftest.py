"""The Token Introspection Service on loopback in front of a real EHR (authorization server + FHIR API)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from servers.demo_data.plan import DemoPlan
from servers.ehr.app import make_app as make_ehr
from servers.ehr.oauth.clients import INTROSPECTION_CLIENT_ID
from servers.ehr.settings import EHRSettings
from servers.introspection.app import make_app as make_introspection
from servers.introspection.settings import IntrospectionSettings
from servers.runtime import ServerLoop
from tests.broker.conftest import SECRETS, clients


@dataclass
class EHR:
    url: str
    plan: DemoPlan

    @property
    def fhir(self) -> str:
        return self.url + "/fhir"


@pytest.fixture(scope="session")
def intro_ehr(server_loop: ServerLoop, tmp_path_factory: pytest.TempPathFactory, small_plan: DemoPlan) -> EHR:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = EHRSettings(data_dir=tmp_path_factory.mktemp("intro-ehr"), plan=small_plan, clients=clients())
    return EHR(server_loop.serve(lambda url: make_ehr(settings, url)).url, small_plan)


@pytest.fixture(scope="session")
def start_service(server_loop: ServerLoop, intro_ehr: EHR) -> Callable[..., str]:
    """Start an introspection service (settings overrides as keywords); returns its /introspect URL."""

    def start(**overrides: Any) -> str:
        options: dict[str, Any] = {"ehr_fhir": intro_ehr.fhir, "client_id": INTROSPECTION_CLIENT_ID,
                                   "client_secret": SECRETS[INTROSPECTION_CLIENT_ID], "callers": clients()}
        options.update(overrides)
        settings = IntrospectionSettings(**options)
        return server_loop.serve(lambda url: make_introspection(settings, url)).url + "/introspect"

    return start
