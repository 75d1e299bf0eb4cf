"""The EHR playing the broker's role itself (``EHRSettings.pacs_url`` / ``s4s-servers ehr --pacs``): the
broker's handlers mounted under the EHR's FHIR base, tokens checked by the EHR's in-process introspector.

Real servers on loopback: our PACS seeded with the small plan, the EHR from its app factory; tokens from a
real standalone launch through the EHR's pages; dicomweb-client and the kit (``s4s_jupyter.connect``) as
clients; no separate broker or introspection service anywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomweb_client import DICOMwebClient

import s4s_jupyter as s4s
from servers.demo_data.plan import DemoPatient
from servers.ehr import command
from servers.pacs.app import make_app as make_pacs
from servers.pacs.seed import seed
from servers.pacs.settings import PACSSettings
from servers.runtime import ServerLoop
from tests.broker.launch import launch
from tests.ehr.conftest import RunningEHR


@pytest.fixture(scope="module")
def pacs_dicomweb(server_loop: ServerLoop, tmp_path_factory: pytest.TempPathFactory,
                  small_plan: Any) -> str:
    tmp = tmp_path_factory.mktemp("ehr-pacs")
    pacs = server_loop.serve(lambda url: make_pacs(PACSSettings(data_dir=tmp / "pacs", fsync=False), url))
    seed(pacs.app.settings["pacs"].store, small_plan)
    return pacs.url + "/dicom-web"


@pytest.fixture(scope="module")
def imaging_ehr(start_ehr: Callable[..., RunningEHR], pacs_dicomweb: str) -> RunningEHR:
    return start_ehr(pacs_url=pacs_dicomweb)


def bearer(ehr: RunningEHR, patient: DemoPatient) -> dict[str, str]:
    user = next(u for u in ehr.plan.users if u.patient_ids == (patient.id,))
    token = launch(ehr.url, user.username, user.password, patient.id)["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_imaging_search_and_retrieve_at_the_ehr(imaging_ehr: RunningEHR) -> None:
    ehr = imaging_ehr
    patient = ehr.plan.patients[0]
    headers = bearer(ehr, patient)
    r = httpx.get(f"{ehr.fhir_base}/ImagingStudy", headers=headers,
                  params={"patient": patient.id, "_include": "ImagingStudy:endpoint"})
    assert r.status_code == 200, r.text
    bundle = r.json()
    studies = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert sorted(s["identifier"][0]["value"] for s in studies) == \
        sorted(f"urn:oid:{s.study_uid}" for s in patient.studies)
    endpoint = next(e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include")
    assert endpoint["resourceType"] == "Endpoint" and endpoint["address"] == f"{ehr.url}/dicom-web"
    # read interactions of the mounted handlers, not the EHR's generic FHIR type handler
    study_id = studies[0]["id"]
    read = httpx.get(f"{ehr.fhir_base}/ImagingStudy/{study_id}", headers=headers)
    assert read.status_code == 200 and read.json()["id"] == study_id
    ep = httpx.get(f"{ehr.fhir_base}/Endpoint/{endpoint['id']}", headers=headers)
    assert ep.status_code == 200 and ep.json()["address"] == endpoint["address"]

    # an outside DICOMweb client with the same token, at the Endpoint's address
    dw = DICOMwebClient(endpoint["address"], headers=headers)
    study = patient.studies[0]
    instances = dw.retrieve_study(study.study_uid)
    assert len(instances) == study.number_of_instances
    assert {str(ds.PatientID) for ds in instances} == {patient.mrn}
    found = dw.search_for_studies()
    assert sorted(f["0020000D"]["Value"][0] for f in found) == sorted(s.study_uid for s in patient.studies)
    # the EHR's own FHIR API still answers with the same token
    assert httpx.get(f"{ehr.fhir_base}/Patient/{patient.id}", headers=headers).status_code == 200


def test_other_patients_and_missing_tokens_are_refused(imaging_ehr: RunningEHR) -> None:
    ehr = imaging_ehr
    patient, other = ehr.plan.patients[0], ehr.plan.patients[1]
    headers = bearer(ehr, patient)
    theirs = other.studies[0].study_uid
    assert httpx.get(f"{ehr.url}/dicom-web/studies/{theirs}", headers=headers).status_code == 404
    assert httpx.get(f"{ehr.url}/dicom-web/studies/{theirs}/metadata", headers=headers).status_code == 404
    r = httpx.get(f"{ehr.fhir_base}/ImagingStudy", params={"patient": other.id}, headers=headers)
    assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
    # a token of the same patient without an ImagingStudy grant opens no imaging
    user = next(u for u in ehr.plan.users if u.patient_ids == (patient.id,))
    labs = launch(ehr.url, user.username, user.password, patient.id,
                  scope="launch/patient patient/Observation.rs")["access_token"]
    r = httpx.get(f"{ehr.fhir_base}/ImagingStudy", params={"patient": patient.id},
                  headers={"Authorization": f"Bearer {labs}"})
    assert r.status_code == 403, r.text
    for url in (f"{ehr.fhir_base}/ImagingStudy?patient={patient.id}",
                f"{ehr.url}/dicom-web/studies/{patient.studies[0].study_uid}",
                f"{ehr.url}/dicom-web/studies"):
        none = httpx.get(url)
        assert none.status_code == 401 and none.headers["WWW-Authenticate"].startswith("Bearer"), url
        assert httpx.get(url, headers={"Authorization": "Bearer not-a-token"}).status_code == 401, url


def test_discovery_lists_the_ehr_as_its_own_imaging_server(imaging_ehr: RunningEHR, ehr: RunningEHR) -> None:
    config = httpx.get(f"{imaging_ehr.fhir_base}/.well-known/smart-configuration").json()
    assert config["associated_endpoints"] == [{"url": imaging_ehr.fhir_base,
                                               "capabilities": ["smart-imaging-access"]}]
    meta = httpx.get(f"{imaging_ehr.fhir_base}/metadata").json()
    resources = {r["type"]: r for r in meta["rest"][0]["resource"]}
    assert {p["name"] for p in resources["ImagingStudy"]["searchParam"]} >= {"patient", "identifier",
                                                                             "_lastUpdated"}
    assert resources["ImagingStudy"]["searchInclude"] == ["ImagingStudy:endpoint"]
    assert "Endpoint" in resources and "Patient" in resources

    # without a PACS: nothing of it (the shared EHR of the other tests)
    plain = ehr
    plain_config = httpx.get(f"{plain.fhir_base}/.well-known/smart-configuration").json()
    assert plain_config["associated_endpoints"] == []
    types = {r["type"] for r in httpx.get(f"{plain.fhir_base}/metadata").json()["rest"][0]["resource"]}
    assert "ImagingStudy" not in types and "Endpoint" not in types
    patient = plain.plan.patients[0]
    headers = bearer(plain, patient)
    for url in (f"{plain.fhir_base}/ImagingStudy?patient={patient.id}",
                f"{plain.fhir_base}/Endpoint/wado-rs",
                f"{plain.url}/dicom-web/studies/{patient.studies[0].study_uid}",
                f"{plain.url}/dicom-web/studies"):
        assert httpx.get(url, headers=headers).status_code == 404, url


def test_an_external_broker_stays_the_associated_endpoint(start_ehr: Callable[..., RunningEHR],
                                                          pacs_dicomweb: str) -> None:
    from servers.ehr.settings import AssociatedEndpoint

    broker = "http://127.0.0.1:9/fhir"
    ehr = start_ehr(pacs_url=pacs_dicomweb, associated_endpoints=(AssociatedEndpoint(broker),))
    config = httpx.get(f"{ehr.fhir_base}/.well-known/smart-configuration").json()
    assert [e["url"] for e in config["associated_endpoints"]] == [broker]


def test_the_kit_finds_and_uses_the_ehr_imaging(imaging_ehr: RunningEHR) -> None:
    ehr = imaging_ehr
    user = next(u for u in ehr.plan.users if len(u.patient_ids) > 1)
    patient = ehr.plan.patient(user.patient_ids[1])
    login = s4s.FormLogin(user.username, user.password, patient=patient.id)
    with s4s.connect(ehr.fhir_base, browser=login, token_store=False) as session:
        assert session.imaging_base == ehr.fhir_base
        studies = session.imaging_studies()
        assert sorted(studies["study_uid"]) == sorted(s.study_uid for s in patient.studies)
        assert set(studies["endpoint"]) == {f"{ehr.url}/dicom-web"}
        datasets = session.retrieve(studies.iloc[0], progress=False)
        planned = next(s for s in patient.studies if s.study_uid == studies.iloc[0]["study_uid"])
        assert len(datasets) == planned.number_of_instances
        assert {str(ds.StudyInstanceUID) for ds in datasets} == {planned.study_uid}


def test_command_pacs_option(server_loop: ServerLoop, tmp_path: Path, pacs_dicomweb: str) -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--data-dir", str(tmp_path / "data"), "--patients", "3",
                              "--pacs", pacs_dicomweb + "/"])
    urls = command.run(args, server_loop)
    ehr_url = urls["ehr_fhir"].removesuffix("/fhir")
    assert urls["broker_fhir"] == urls["ehr_fhir"] and urls["broker_dicomweb"] == f"{ehr_url}/dicom-web"
    config = httpx.get(urls["smart_configuration"]).json()
    assert config["associated_endpoints"][0]["url"] == urls["ehr_fhir"]
    r = httpx.get(f"{urls['broker_dicomweb']}/studies")
    assert r.status_code == 401  # mounted (and guarded); without --pacs this path is a 404
