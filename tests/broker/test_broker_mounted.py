"""The broker's handlers mounted in another application with an in-process authorizer (what the EHR
does when configured with a PACS): the EHR's own TokenIntrospector decides, no HTTP introspection."""

from __future__ import annotations

import httpx
import tornado.web
from dicomweb_client import DICOMwebClient

from servers.broker.app import broker_routes, build_context
from servers.broker.authorizer import InProcessAuthorizer
from servers.broker.patients import IdentifierRule, InProcessPatientDirectory
from servers.broker.settings import MR_TYPE
from servers.ehr.app import SERVICES_KEY
from servers.ehr.fhir.store import build_store
from servers.runtime import CLEANUP_KEY
from tests.broker.conftest import Stack


def test_mounted_broker_with_in_process_introspection(stack: Stack) -> None:
    assert stack.ehr_app is not None
    introspector = stack.ehr_app.settings[SERVICES_KEY].introspector
    settings = stack.broker_settings(stack.pacs_dicomweb, introspection_url=None)
    # the EHR's own FHIR store answers the Patient lookups (no HTTP, no broker credentials needed)
    store = build_store(stack.plan)
    patients = InProcessPatientDirectory(lambda pid: store.read("Patient", pid),
                                         IdentifierRule(f"type:{MR_TYPE}"))

    def factory(url: str) -> tornado.web.Application:
        ctx, cleanups = build_context(settings, url, authorizer=InProcessAuthorizer(introspector),
                                      patients=patients, fhir_path="/imaging/fhir",
                                      dicomweb_path="/imaging/dicom-web")
        app = tornado.web.Application(broker_routes(ctx, discovery=False))
        app.settings[CLEANUP_KEY] = cleanups
        return app

    url = stack.loop.serve(factory).url
    patient, other = stack.plan.patients[0], stack.plan.patients[1]
    headers = stack.headers(patient)
    r = httpx.get(f"{url}/imaging/fhir/ImagingStudy", params={"patient": patient.id,
                                                              "_include": "ImagingStudy:endpoint"},
                  headers=headers)
    assert r.status_code == 200, r.text
    endpoint = next(e["resource"] for e in r.json()["entry"] if e["search"]["mode"] == "include")
    assert endpoint["address"] == f"{url}/imaging/dicom-web"
    dw = DICOMwebClient(endpoint["address"], headers=headers)
    study = patient.studies[0]
    assert len(dw.retrieve_study(study.study_uid)) == study.number_of_instances
    assert httpx.get(f"{url}/imaging/dicom-web/studies/{other.studies[0].study_uid}",
                     headers=headers).status_code == 404
    assert httpx.get(f"{url}/imaging/dicom-web/studies", headers={"Authorization": "Bearer nope"}
                     ).status_code == 401
    # discovery stays with the host application
    assert httpx.get(f"{url}/imaging/fhir/metadata").status_code == 404
