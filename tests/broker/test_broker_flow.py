"""The flow of DESIGN.md steps 5 and 6 through the broker, judged by outside clients: dicomweb-client for
DICOMweb, fhir.resources for the FHIR answers. Tokens come from the EHR's real launch."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from dicomweb_client import DICOMwebClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy
from requests import HTTPError

from s4s_jupyter.core.imaging_study import study_reference
from tests.broker.conftest import Stack, assert_study_as_stored


def client(stack: Stack, token: str | None, url: str | None = None) -> DICOMwebClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return DICOMwebClient(url or stack.broker_dicomweb, headers=headers)


def test_imaging_study_search_then_retrieve_with_the_same_token(stack: Stack) -> None:
    patient = stack.plan.patients[0]
    headers = stack.headers(patient)
    r = httpx.get(f"{stack.broker_fhir}/ImagingStudy", headers=headers,
                  params={"patient": patient.id, "_include": "ImagingStudy:endpoint"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    bundle = r.json()
    Bundle.model_validate(bundle)
    studies = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    endpoints = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert bundle["total"] == len(studies) == len(patient.studies)
    assert {s["id"] for s in studies} == {s.study_uid for s in patient.studies}
    assert len(endpoints) == 1 and endpoints[0]["address"] == stack.broker_dicomweb
    planned = {s.study_uid: s for s in patient.studies}
    for resource in studies:
        ImagingStudy.model_validate(resource)
        plan = planned[resource["id"]]
        assert resource["numberOfInstances"] == plan.number_of_instances
        assert resource["numberOfSeries"] == len(plan.series)
        assert resource["subject"]["reference"] == f"Patient/{patient.id}"
    # the kit's reading of the answer, then the retrieve at Endpoint.address with the same token
    ref = study_reference(studies[0], endpoints)
    assert ref.endpoints[0].requires_access_token
    dw = client(stack, stack.token(patient), ref.endpoints[0].address)
    datasets = dw.retrieve_study(ref.study_uid)
    # byte for byte what the PACS stores: the pixel data of every instance
    assert_study_as_stored(datasets, patient, planned[ref.study_uid])


def test_dicomweb_client_searches_and_retrieves_every_level(stack: Stack) -> None:
    patient = stack.plan.patients[1]
    dw = client(stack, stack.token(patient))
    found = dw.search_for_studies()
    assert {s["0020000D"]["Value"][0] for s in found} == {s.study_uid for s in patient.studies}
    assert all(s["00100020"]["Value"][0] == patient.mrn for s in found)
    for s in found:  # RetrieveURL points at the broker, never at the PACS
        if "00081190" in s:
            assert s["00081190"]["Value"][0].startswith(stack.broker_dicomweb + "/studies/")
    study = patient.studies[0]
    series = study.series[0]
    uid = series.instance_uids[0]
    assert {s["0020000E"]["Value"][0] for s in dw.search_for_series(study.study_uid)} == {
        s.series_uid for s in study.series}
    assert len(dw.search_for_instances(study.study_uid, series.series_uid)) == len(series.instance_uids)
    assert len(dw.retrieve_series(study.study_uid, series.series_uid)) == len(series.instance_uids)
    ds = dw.retrieve_instance(study.study_uid, series.series_uid, uid)
    assert ds.SOPInstanceUID == uid and ds.PatientID == patient.mrn
    frames = dw.retrieve_instance_frames(study.study_uid, series.series_uid, uid, frame_numbers=[1])
    assert frames[0] == ds.PixelData
    rendered = dw.retrieve_instance_rendered(study.study_uid, series.series_uid, uid,
                                             media_types=("image/png",))
    assert rendered[:8] == b"\x89PNG\r\n\x1a\n"
    metadata = dw.retrieve_series_metadata(study.study_uid, series.series_uid)
    assert len(metadata) == len(series.instance_uids)
    uris = [m[tag]["BulkDataURI"] for m in metadata for tag in m if "BulkDataURI" in m[tag]]
    assert uris and all(u.startswith(stack.broker_dicomweb + "/studies/" + study.study_uid) for u in uris)
    assert stack.pacs_dicomweb not in json.dumps(metadata)
    pixel_uri = next(u for u in uris if u.endswith("7FE00010") or "7fe00010" in u.lower())
    bulk = dw.retrieve_bulkdata(pixel_uri)
    assert b"".join(bulk) == ds.PixelData


def test_missing_invalid_and_revoked_tokens_are_401(stack: Stack) -> None:
    patient = stack.plan.patients[0]
    study = patient.studies[0]
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"},
                    {"Authorization": "Bearer"}):
        for url in (f"{stack.broker_fhir}/ImagingStudy?patient={patient.id}",
                    f"{stack.broker_dicomweb}/studies/{study.study_uid}",
                    f"{stack.broker_dicomweb}/studies"):
            r = httpx.get(url, headers=headers)
            assert r.status_code == 401, (url, headers, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(HTTPError) as err:
        client(stack, None).retrieve_study(study.study_uid)
    assert err.value.response is not None and err.value.response.status_code == 401
    # a token revoked at the EHR stops working at the broker (within the introspection cache TTL)
    response = stack.token_response(patient, fresh=True)
    headers = {"Authorization": f"Bearer {response['access_token']}"}
    assert httpx.get(f"{stack.broker_dicomweb}/studies", headers=headers).status_code == 200
    r = httpx.post(f"{stack.ehr_url}/auth/revoke", data={"token": response["access_token"],
                                                         "client_id": "s4s-jupyter"})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 5
    while httpx.get(f"{stack.broker_dicomweb}/studies", headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "revocation not seen within the introspection TTL"
        time.sleep(0.2)


def test_tokens_in_the_query_string_are_refused_and_never_forwarded(stack: Stack) -> None:
    # RFC 6750 2.3: refused (400) even beside a valid header, so a token never rides in a logged URL
    patient = stack.plan.patients[0]
    token = stack.token_response(patient)["access_token"]
    for url in (f"{stack.broker_fhir}/ImagingStudy?patient={patient.id}",
                f"{stack.broker_dicomweb}/studies/{patient.studies[0].study_uid}/metadata",
                f"{stack.broker_dicomweb}/studies"):
        for headers in ({}, {"Authorization": f"Bearer {token}"}):
            r = httpx.get(url, params={"access_token": token}, headers=headers)
            assert r.status_code == 400, (url, r.status_code, r.text)
            assert token not in r.text


def test_wrong_patient_or_scope_is_403_and_foreign_study_is_404(stack: Stack) -> None:
    mine, other = stack.plan.patients[0], stack.plan.patients[1]
    headers = stack.headers(mine)
    r = httpx.get(f"{stack.broker_fhir}/ImagingStudy", params={"patient": other.id}, headers=headers)
    assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
    no_imaging = stack.headers(mine, scope="launch/patient patient/Observation.rs")
    r = httpx.get(f"{stack.broker_fhir}/ImagingStudy", params={"patient": mine.id}, headers=no_imaging)
    assert r.status_code == 403, r.text
    assert httpx.get(f"{stack.broker_dicomweb}/studies/{mine.studies[0].study_uid}",
                     headers=no_imaging).status_code == 403
    # v1 scopes are accepted
    v1 = stack.headers(mine, scope="launch/patient patient/*.read")
    assert httpx.get(f"{stack.broker_fhir}/ImagingStudy", params={"patient": mine.id},
                     headers=v1).status_code == 200
    dw = client(stack, stack.token(mine))
    foreign = other.studies[0]
    for call in (lambda: dw.retrieve_study(foreign.study_uid),
                 lambda: dw.retrieve_study_metadata(foreign.study_uid),
                 lambda: dw.retrieve_series(foreign.study_uid, foreign.series[0].series_uid),
                 lambda: dw.retrieve_study("1.2.826.0.1.3680043.8.498.999")):
        with pytest.raises(HTTPError) as err:
            call()
        assert err.value.response is not None and err.value.response.status_code == 404
    r = httpx.get(f"{stack.broker_fhir}/ImagingStudy/{foreign.study_uid}", headers=headers)
    assert r.status_code == 404 and r.json()["issue"][0]["code"] == "not-found"


def test_search_parameters_identifier_last_updated_and_paging(stack: Stack) -> None:
    patient = stack.plan.patients[0]
    headers = stack.headers(patient)
    url = f"{stack.broker_fhir}/ImagingStudy"
    target = patient.studies[0].study_uid
    for form in (f"urn:dicom:uid|{target}", f"urn:dicom:uid|urn:oid:{target}", f"urn:oid:{target}"):
        r = httpx.get(url, params={"patient": f"Patient/{patient.id}", "identifier": form}, headers=headers)
        assert r.status_code == 200 and [e["resource"]["id"] for e in r.json()["entry"]] == [target]
    other = stack.plan.patients[1].studies[0].study_uid
    r = httpx.get(url, params={"patient": patient.id, "identifier": f"urn:oid:{other}"}, headers=headers)
    assert r.status_code == 200 and r.json()["total"] == 0
    assert httpx.get(url, params={"patient": patient.id, "identifier": "urn:oid:1..2"},
                     headers=headers).status_code == 400
    # _lastUpdated: the study date; the older study is excluded by gt of the newer one's day
    newest = max(patient.studies, key=lambda s: s.started)
    oldest = min(patient.studies, key=lambda s: s.started)
    r = httpx.get(url, params={"patient": patient.id,
                               "_lastUpdated": "gt" + oldest.started.strftime("%Y-%m-%dT%H:%M:%SZ")},
                  headers=headers)
    ids = [e["resource"]["id"] for e in r.json()["entry"]]
    assert newest.study_uid in ids and oldest.study_uid not in ids
    day = oldest.started.strftime("%Y-%m-%d")
    r = httpx.get(url, params={"patient": patient.id, "_lastUpdated": "le" + day}, headers=headers)
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [oldest.study_uid]
    assert httpx.get(url, params={"patient": patient.id, "_lastUpdated": "2024-13"},
                     headers=headers).status_code == 400
    # paging: one per page, following next links
    seen: list[str] = []
    next_url: str | None = f"{url}?patient={patient.id}&_count=1"
    while next_url:
        page = httpx.get(next_url, headers=headers).json()
        assert page["total"] == len(patient.studies)
        seen += [e["resource"]["id"] for e in page["entry"]]
        next_url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert sorted(seen) == sorted(s.study_uid for s in patient.studies)
    # patient is required; unknown parameters are refused unless lenient
    assert httpx.get(url, headers=headers).status_code == 400
    unknown = {"patient": patient.id, "modality": "CT"}
    assert httpx.get(url, params=unknown, headers=headers).status_code == 400
    assert httpx.get(url, params={"patient": patient.id, "modality": "CT"},
                     headers={**headers, "Prefer": "handling=lenient"}).status_code == 200


def test_read_endpoint_metadata_and_smart_configuration(stack: Stack) -> None:
    patient = stack.plan.patients[0]
    headers = stack.headers(patient)
    study = patient.studies[0]
    r = httpx.get(f"{stack.broker_fhir}/ImagingStudy/{study.study_uid}", headers=headers)
    assert r.status_code == 200
    ImagingStudy.model_validate(r.json())
    endpoint = httpx.get(f"{stack.broker_fhir}/Endpoint/wado-rs", headers=headers).json()
    Endpoint.model_validate(endpoint)
    assert endpoint["address"] == stack.broker_dicomweb
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert httpx.get(f"{stack.broker_fhir}/Endpoint/other", headers=headers).status_code == 404
    assert httpx.get(f"{stack.broker_fhir}/Endpoint/wado-rs").status_code == 401
    capability = httpx.get(f"{stack.broker_fhir}/metadata").json()
    CapabilityStatement.model_validate(capability)
    assert capability["fhirVersion"] == "4.0.1"
    config = httpx.get(f"{stack.broker_fhir}/.well-known/smart-configuration").json()
    ehr_config = httpx.get(f"{stack.ehr_fhir}/.well-known/smart-configuration").json()
    assert config["token_endpoint"] == ehr_config["token_endpoint"]
    assert config["authorization_endpoint"] == ehr_config["authorization_endpoint"]
    assert "smart-imaging-access" in config["capabilities"]
