"""The broker under test, on loopback with every real role it sits between.

One session stack: our PACS (seeded with the small demo plan), the EHR (authorization server + FHIR API),
the Token Introspection Service relaying to the EHR, and the broker asking the introspection service.
``stack.start_broker(pacs_url, ...)`` starts further brokers (in front of Orthanc or of a faulty
upstream) sharing the same EHR and introspection service.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
import tornado.web

from servers.broker.app import make_app as make_broker
from servers.broker.context import BrokerContext
from servers.broker.settings import BrokerSettings
from servers.demo_data.dicom import instance_bytes
from servers.demo_data.plan import DemoPatient, DemoPlan, DemoUser, StudyPlan
from servers.ehr.app import make_app as make_ehr
from servers.ehr.oauth.clients import (
    BROKER_CLIENT_ID,
    INTROSPECTION_CLIENT_ID,
    Client,
    demo_clients_json,
)
from servers.ehr.settings import EHRSettings
from servers.introspection.app import make_app as make_introspection
from servers.introspection.settings import IntrospectionSettings, Mode
from servers.pacs.app import make_app as make_pacs
from servers.pacs.seed import seed
from servers.pacs.settings import PACSSettings
from servers.runtime import ServerLoop
from tests.broker.launch import SCOPE, launch

SECRETS = {BROKER_CLIENT_ID: "broker-secret-for-tests-0123456789",
           INTROSPECTION_CLIENT_ID: "introspection-secret-for-tests-0123"}


def assert_study_as_stored(datasets: Sequence[pydicom.Dataset], patient: DemoPatient,
                           plan: StudyPlan) -> None:
    """``datasets`` are the instances of ``plan``, each once, byte for byte the pixel data the PACS stores
    and the patient's PatientID."""
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(
        uid for s in plan.series for uid in s.instance_uids)
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    for s in plan.series:
        for i, uid in enumerate(s.instance_uids):
            original = pydicom.dcmread(io.BytesIO(instance_bytes(patient, plan, s, i)))
            assert by_uid[uid].PixelData == original.PixelData
            assert by_uid[uid].PatientID == patient.mrn


def clients() -> tuple[Client, ...]:
    regs = demo_clients_json()["clients"]
    for reg in regs:
        if reg["client_id"] in SECRETS:
            reg["client_secret"] = SECRETS[reg["client_id"]]
    return tuple(Client.from_json(r) for r in regs)


@dataclass
class Stack:
    loop: ServerLoop
    plan: DemoPlan
    tmp: Path
    pacs_dicomweb: str = ""
    ehr_url: str = ""
    ehr_app: tornado.web.Application | None = None
    introspection_url: str = ""
    broker_url: str = ""
    broker: BrokerContext | None = None
    _tokens: dict[tuple[str, str | None, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def ehr_fhir(self) -> str:
        return self.ehr_url + "/fhir"

    @property
    def broker_fhir(self) -> str:
        return self.broker_url + "/fhir"

    @property
    def broker_dicomweb(self) -> str:
        return self.broker_url + "/dicom-web"

    def user_for(self, patient: DemoPatient) -> DemoUser:
        return next(u for u in self.plan.users if u.patient_ids == (patient.id,))

    def token_response(self, patient: DemoPatient, scope: str = SCOPE, *, fresh: bool = False,
                       username: str | None = None) -> dict[str, Any]:
        user = next(u for u in self.plan.users if u.username == username) if username else \
            self.user_for(patient)
        key = (user.username, patient.id, scope)
        if fresh:  # a token of its own (e.g. to revoke), not shared with other tests
            return launch(self.ehr_url, user.username, user.password, patient.id, scope=scope)
        if key not in self._tokens:
            self._tokens[key] = launch(self.ehr_url, user.username, user.password, patient.id, scope=scope)
        return self._tokens[key]

    def token(self, patient: DemoPatient, scope: str = SCOPE, **kw: Any) -> str:
        return str(self.token_response(patient, scope, **kw)["access_token"])

    def headers(self, patient: DemoPatient, scope: str = SCOPE, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(patient, scope, **kw)}"}

    def broker_settings(self, pacs_dicomweb: str, **overrides: Any) -> BrokerSettings:
        options: dict[str, Any] = {
            "pacs_url": pacs_dicomweb, "ehr_fhir": self.ehr_fhir,
            "introspection_url": self.introspection_url, "client_id": BROKER_CLIENT_ID,
            "client_secret": SECRETS[BROKER_CLIENT_ID],
            "data_dir": self.tmp / f"broker-{len(self.loop.served)}",
            "introspection_cache_ttl": 1.0}
        options.update(overrides)
        return BrokerSettings(**options)

    def start_broker(self, pacs_dicomweb: str, **overrides: Any) -> tuple[str, BrokerContext]:
        """Another broker in front of ``pacs_dicomweb``; returns its URL and context."""
        settings = self.broker_settings(pacs_dicomweb, **overrides)
        served = self.loop.serve(lambda url: make_broker(settings, url))
        return served.url, served.app.settings["broker_context"]


@pytest.fixture(scope="session")
def stack(server_loop: ServerLoop, tmp_path_factory: pytest.TempPathFactory,
          small_plan: DemoPlan) -> Iterator[Stack]:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    tmp = tmp_path_factory.mktemp("broker-stack")
    s = Stack(server_loop, small_plan, tmp)
    pacs = server_loop.serve(lambda url: make_pacs(PACSSettings(data_dir=tmp / "pacs", fsync=False), url))
    seed(pacs.app.settings["pacs"].store, small_plan)
    s.pacs_dicomweb = pacs.url + "/dicom-web"
    ehr_settings = EHRSettings(data_dir=tmp / "ehr-data", plan=small_plan, clients=clients())
    ehr = server_loop.serve(lambda url: make_ehr(ehr_settings, url))
    s.ehr_url, s.ehr_app = ehr.url, ehr.app
    registered = clients()
    intro_settings = IntrospectionSettings(
        ehr_fhir=s.ehr_fhir, mode=Mode.RELAY, client_id=INTROSPECTION_CLIENT_ID,
        client_secret=SECRETS[INTROSPECTION_CLIENT_ID], callers=registered, cache_ttl=1.0)
    intro = server_loop.serve(lambda url: make_introspection(intro_settings, url))
    s.introspection_url = intro.url + "/introspect"
    s.broker_url, s.broker = s.start_broker(s.pacs_dicomweb, data_dir=tmp / "broker")
    yield s
