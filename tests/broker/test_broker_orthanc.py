"""The broker in front of Orthanc (Debian orthanc + orthanc-dicomweb), a PACS we did not write, instead of
our own: the same searches, retrieves and guards, with dicomweb-client as the judge."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from dicomweb_client import DICOMwebClient
from fhir.resources.R4B.bundle import Bundle
from requests import HTTPError

from servers.demo_data.dicom import iter_plan
from tests.broker.conftest import Stack
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def orthanc() -> Iterator[OrthancServer]:
    """An Orthanc of this module's own (the session one may hold another data set with the same
    PatientIDs), from the project's harness."""
    with OrthancServer() as server:
        yield server


@pytest.fixture(scope="module")
def orthanc_broker(stack: Stack, orthanc: OrthancServer) -> Iterator[str]:
    orthanc.load(data for _, data in iter_plan(stack.plan))
    url, _ = stack.start_broker(orthanc.dicomweb_url)
    yield url


def test_fhir_search_built_from_orthancs_qido(stack: Stack, orthanc_broker: str) -> None:
    patient = stack.plan.patients[0]
    r = httpx.get(f"{orthanc_broker}/fhir/ImagingStudy", headers=stack.headers(patient),
                  params={"patient": patient.id, "_include": "ImagingStudy:endpoint"})
    assert r.status_code == 200, r.text
    Bundle.model_validate(r.json())
    entries = r.json()["entry"]
    studies = {e["resource"]["id"]: e["resource"] for e in entries if e["search"]["mode"] == "match"}
    assert set(studies) == {s.study_uid for s in patient.studies}
    for plan in patient.studies:
        resource = studies[plan.study_uid]
        assert resource["numberOfInstances"] == plan.number_of_instances
        assert [s["uid"] for s in resource["series"]] == [s.series_uid for s in plan.series]
        assert [[i["uid"] for i in s["instance"]] for s in resource["series"]] == [
            list(s.instance_uids) for s in plan.series]
        assert resource["started"] == plan.started.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_dicomweb_client_through_the_broker_to_orthanc(stack: Stack, orthanc_broker: str,
                                                       orthanc: OrthancServer) -> None:
    patient, other = stack.plan.patients[0], stack.plan.patients[1]
    dw = DICOMwebClient(f"{orthanc_broker}/dicom-web",
                        headers={"Authorization": f"Bearer {stack.token(patient)}"})
    found = dw.search_for_studies()
    assert {s["0020000D"]["Value"][0] for s in found} == {s.study_uid for s in patient.studies}
    study = patient.studies[0]
    series = study.series[0]
    datasets = dw.retrieve_study(study.study_uid)
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(
        u for s in study.series for u in s.instance_uids)
    assert {ds.PatientID for ds in datasets} == {patient.mrn}
    metadata = dw.retrieve_series_metadata(study.study_uid, series.series_uid)
    text = json.dumps(metadata)
    assert orthanc.url not in text, "Orthanc's own URLs are rewritten to the broker's"
    uris = [m[t]["BulkDataURI"] for m in metadata for t in m if "BulkDataURI" in m[t]]
    assert uris and all(u.startswith(f"{orthanc_broker}/dicom-web/studies/{study.study_uid}/") for u in uris)
    ds = dw.retrieve_instance(study.study_uid, series.series_uid, series.instance_uids[0])
    pixel_uri = next(u for u in uris if series.instance_uids[0] in u and "7fe00010" in u.lower())
    # (Orthanc itself answers 400 to dicomweb-client's default Accept: multipart/related; type="*/*")
    bulk = dw.retrieve_bulkdata(pixel_uri, media_types=("application/octet-stream",))
    assert b"".join(bulk) == ds.PixelData
    frames = dw.retrieve_instance_frames(study.study_uid, series.series_uid, series.instance_uids[0], [1],
                                         media_types=("application/octet-stream",))
    assert frames[0] == ds.PixelData
    # guards hold in front of Orthanc too
    with pytest.raises(HTTPError) as err:
        dw.retrieve_study(other.studies[0].study_uid)
    assert err.value.response is not None and err.value.response.status_code == 404
    with pytest.raises(HTTPError) as err:
        dw.retrieve_series(study.study_uid, other.studies[0].series[0].series_uid)
    assert err.value.response is not None and err.value.response.status_code == 404
    for level in ("studies", "series", "instances"):
        r = httpx.get(f"{orthanc_broker}/dicom-web/{level}", params={"PatientID": other.mrn},
                      headers=stack.headers(patient))
        assert r.status_code in (200, 204) and other.mrn not in r.text
