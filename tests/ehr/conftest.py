"""EHR fixtures: real EHR servers on loopback (the app factory the CLI uses), with a settable clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import tornado.web

from servers.demo_data.plan import DemoPlan
from servers.ehr.app import SERVICES_KEY, EHRServices, make_app
from servers.ehr.oauth.clients import Client, demo_clients_json
from servers.ehr.oauth.endpoints import OAuthEndpoints
from servers.ehr.settings import EHRSettings
from servers.runtime import ServerLoop

#: fixed secrets of the confidential test clients
SECRETS = {"s4s-broker": "broker-secret-0123456789", "s4s-introspection": "introspection-secret-0123456789",
           "web-app": "web-app-secret-0123456789"}
#: a confidential web app using the authorization code grant with client_secret_basic
WEB_APP = {"client_id": "web-app", "client_name": "Confidential web app", "client_secret": SECRETS["web-app"],
           "redirect_uris": ["https://app.example.org/callback"],
           "grant_types": ["authorization_code", "refresh_token"],
           "scope": "launch/patient openid fhirUser offline_access patient/*.rs"}
#: a second public client with the same loopback redirect URI as the kit: any app can claim a public
#: client's id, so nothing issued to one public client may be usable by another (RFC 9700 4.5, 4.14)
OTHER_PUBLIC_APP = {"client_id": "other-public-app", "client_name": "Another public app",
                    "redirect_uris": ["http://127.0.0.1/callback"],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "scope": "launch/patient openid fhirUser offline_access patient/*.rs"}


def registered_clients() -> tuple[Client, ...]:
    registrations = demo_clients_json()["clients"]
    for reg in registrations:
        if reg["client_id"] in SECRETS:
            reg["client_secret"] = SECRETS[reg["client_id"]]
    return tuple(Client.from_json(c) for c in [*registrations, WEB_APP, OTHER_PUBLIC_APP])




@dataclass
class FakeClock:
    """Seconds since the epoch that a test can move forward."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RunningEHR:
    url: str
    settings: EHRSettings
    clock: FakeClock
    app: tornado.web.Application

    @property
    def endpoints(self) -> OAuthEndpoints:
        return OAuthEndpoints(self.url)

    @property
    def fhir_base(self) -> str:
        return self.endpoints.fhir_base

    @property
    def services(self) -> EHRServices:
        services: EHRServices = self.app.settings[SERVICES_KEY]
        return services

    @property
    def plan(self) -> DemoPlan:
        return self.settings.plan


@pytest.fixture(scope="session")
def start_ehr(server_loop: ServerLoop, tmp_path_factory: pytest.TempPathFactory,
              small_plan: DemoPlan) -> Callable[..., RunningEHR]:
    """Start an EHR on a free loopback port: ``start_ehr(auto_approve=True, ...)`` (EHRSettings fields)."""

    def start(**overrides: Any) -> RunningEHR:
        clock = FakeClock()
        options: dict[str, Any] = {"plan": small_plan, "clients": registered_clients(), "clock": clock}
        options.update(overrides)
        settings = EHRSettings(data_dir=tmp_path_factory.mktemp("ehr"), **options)
        served = server_loop.serve(lambda url: make_app(settings, url))
        return RunningEHR(served.url, settings, clock, served.app)

    return start


@pytest.fixture(scope="session")
def ehr(start_ehr: Callable[..., RunningEHR]) -> RunningEHR:
    """One EHR shared by the tests that do not move its clock."""
    return start_ehr()
