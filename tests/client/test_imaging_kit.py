"""Imaging through the SMART session: ImagingStudy search at the broker into pandas, retrieval through
the Endpoint with the token, the broker in front of Orthanc, and a login on an auto-approving EHR."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from pydicom import dcmread

import s4s_jupyter as s4s
from s4s_jupyter.core.errors import ClientError
from servers.demo_data.plan import DemoPlan
from servers.runtime import ServerLoop
from tests.support.orthanc import OrthancServer


def maya_login(stack: dict[str, Any]) -> s4s.FormLogin:
    maya = next(u for u in stack["users"] if u["username"] == "maya1")
    return s4s.FormLogin(maya["username"], maya["password"])


@pytest.fixture(scope="module")
def ehr(stack: dict[str, Any]) -> Iterator[s4s.Session]:
    with s4s.connect(stack["ehr_fhir"], browser=maya_login(stack), token_store=False) as session:
        yield session


def test_imaging_studies_into_dataframe(ehr: s4s.Session, stack: dict[str, Any], kit_plan: DemoPlan) -> None:
    planned = kit_plan.patient("pat-001").studies
    studies = ehr.imaging_studies()
    assert sorted(studies["study_uid"]) == sorted(s.study_uid for s in planned)
    assert list(studies["started"]) == sorted(studies["started"], reverse=True)  # newest first
    assert set(studies["endpoint"]) == {stack["broker_dicomweb"]}
    assert studies["requires_access_token"].all() and set(studies["patient"]) == {"pat-001"}
    row = studies.iloc[0]
    plan = next(s for s in planned if s.study_uid == row["study_uid"])
    assert row["number_of_instances"] == plan.number_of_instances
    assert row["accession"] == plan.accession_number
    assert row["modalities"] == plan.modality and row["description"] == plan.description
    assert row["started"] == pd.Timestamp(plan.started)

    series = ehr.series(row)
    assert list(series["series_uid"]) == [s.series_uid for s in plan.series]
    assert list(series["number_of_instances"]) == [len(s.instance_uids) for s in plan.series]


def test_imaging_filters(ehr: s4s.Session, kit_plan: DemoPlan) -> None:
    planned = kit_plan.patient("pat-001").studies
    first = planned[0]
    one = ehr.imaging_studies(study_uid=first.study_uid)
    assert list(one["study_uid"]) == [first.study_uid]
    by_modality = ehr.imaging_studies(modality=first.modality)
    assert set(by_modality["study_uid"]) == {s.study_uid for s in planned if s.modality == first.modality}
    assert ehr.imaging_studies(modality="US").empty
    day = first.started.date()
    window = ehr.imaging_studies(since=day, until=day)
    assert first.study_uid in set(window["study_uid"])
    assert set(window["study_uid"]) == {s.study_uid for s in planned if s.started.date() == day}
    assert ehr.imaging_studies(since=pd.Timestamp(planned[-1].started) + pd.Timedelta(seconds=1)).empty


def test_retrieve_and_download_through_the_broker(ehr: s4s.Session, kit_plan: DemoPlan,
                                                  tmp_path: Path) -> None:
    studies = ehr.imaging_studies()
    datasets = ehr.retrieve(studies.iloc[0], progress=False)
    plan = next(s for s in kit_plan.patient("pat-001").studies if s.study_uid == studies["study_uid"].iloc[0])
    assert [d.SOPInstanceUID for d in datasets] == [u for s in plan.series for u in s.instance_uids]

    manifest = ehr.download(studies, tmp_path, progress=False)
    assert set(manifest["status"]) == {"downloaded"}
    assert set(manifest["fhir_study"]) == set(studies["id"]) and set(manifest["patient"]) == {"pat-001"}
    assert len(manifest) == sum(s.number_of_instances for s in kit_plan.patient("pat-001").studies)
    path = Path(manifest["path"].iloc[0])
    assert path.parts[-4] == "MRN100001" and dcmread(path).PatientID == "MRN100001"
    again = ehr.download(studies, tmp_path, progress=False)
    assert set(again["status"]) == {"verified"}

    by_uid = ehr.retrieve(plan.study_uid, first_only=True, progress=False)
    assert [d.SOPInstanceUID for d in by_uid] == [s.instance_uids[0] for s in plan.series]
    thumbs = ehr.thumbnails(studies.iloc[0])
    assert len(thumbs) == len(plan.series)


def test_another_patients_study_is_not_served(ehr: s4s.Session, stack: dict[str, Any],
                                              kit_plan: DemoPlan) -> None:
    other = kit_plan.patient("pat-002").studies[0]
    with pytest.raises(ClientError) as info:
        ehr.retrieve(other.study_uid, progress=False)  # not among the patient's ImagingStudy resources
    assert info.value.status == 404
    rows = [{"study_uid": other.study_uid, "series_uid": other.series[0].series_uid,
             "endpoint": stack["broker_dicomweb"], "requires_access_token": True}]
    with pytest.raises(ClientError, match="404"):
        ehr.retrieve(rows, progress=False)  # straight at the broker's WADO-RS: refused there


def test_the_kit_through_the_broker_in_front_of_orthanc(server_loop: ServerLoop, stack: dict[str, Any],
                                                       orthanc_pacs: OrthancServer, kit_plan: DemoPlan,
                                                       tmp_path: Path) -> None:
    from servers.broker.command import serve
    from servers.broker.settings import BrokerSettings
    from servers.runtime import reserve

    broker_client = next(c for c in stack["clients"] if c["client_id"] == "s4s-broker")
    settings = BrokerSettings(pacs_url=orthanc_pacs.dicomweb_url, ehr_fhir=stack["ehr_fhir"],
                              introspection_url=stack["introspection"], client_id=broker_client["client_id"],
                              client_secret=broker_client["client_secret"], data_dir=tmp_path / "broker")
    urls = serve(server_loop, settings, reserve())
    with s4s.connect(stack["ehr_fhir"], imaging_base=urls["broker_fhir"], browser=maya_login(stack),
                     token_store=False) as ehr:
        studies = ehr.imaging_studies()
        planned = kit_plan.patient("pat-001").studies
        assert sorted(studies["study_uid"]) == sorted(s.study_uid for s in planned)
        assert set(studies["endpoint"]) == {urls["broker_dicomweb"]}
        manifest = ehr.download(studies.iloc[0], tmp_path / "images", progress=False)
        assert set(manifest["status"]) == {"downloaded"}
        assert len(manifest) == next(s for s in planned
                                     if s.study_uid == studies["study_uid"].iloc[0]).number_of_instances
        metadata = ehr.metadata(studies.iloc[0], first_only=True)
        assert {m.StudyInstanceUID for m in metadata} == {studies["study_uid"].iloc[0]}


def test_login_on_an_auto_approving_ehr_through_the_loopback_listener(server_loop: ServerLoop, tmp_path: Path,
                                                                      kit_plan: DemoPlan) -> None:
    from servers.ehr.command import demo_clients, serve
    from servers.ehr.settings import EHRSettings
    from servers.runtime import reserve

    settings = EHRSettings(data_dir=tmp_path, plan=kit_plan, clients=demo_clients(tmp_path),
                           auto_approve=True)
    urls = serve(server_loop, settings, reserve())

    def headless(url: str) -> None:  # what a browser does when nothing needs a person
        httpx.get(url, follow_redirects=True)

    with s4s.connect(urls["ehr_fhir"], browser=headless, token_store=False) as ehr:
        assert ehr.patient is not None and len(ehr.demographics()) == 1


def test_qido_through_the_broker_with_the_sessions_token(ehr: s4s.Session, kit_plan: DemoPlan) -> None:
    pacs = ehr.dicomweb()  # the Endpoint of the patient's studies, token attached (dicomweb-client)
    assert pacs.endpoint.requires_access_token
    study = kit_plan.patient("pat-001").studies[0]
    series = pacs.series(study.study_uid)
    assert list(series["series_uid"]) == [s.series_uid for s in study.series]


def test_progress_bars_count_instances_and_bytes(ehr: s4s.Session, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    studies = ehr.imaging_studies()
    manifest = ehr.download(studies.iloc[:1], tmp_path, progress=True)
    err = capsys.readouterr().err
    n = len(manifest)
    assert f"{n}/{n}" in err and "inst" in err  # the instances bar reached its total
    assert "received" in err and "B" in err  # the bytes bar


def test_resources_return_the_included_endpoints(ehr: s4s.Session, stack: dict[str, Any]) -> None:
    """``_include=ImagingStudy:endpoint`` at the imaging server: the matches as the list, the Endpoints
    (search.mode include) in ``included``, every page (``_count=1`` makes one study per page)."""
    found = ehr.resources("ImagingStudy", imaging=True, patient=ehr.patient, _include="ImagingStudy:endpoint",
                          _count=1)
    assert isinstance(found, list) and len(found) == len(ehr.imaging_studies()) > 1
    assert {r["resourceType"] for r in found} == {"ImagingStudy"}
    assert found.included and {r["resourceType"] for r in found.included} == {"Endpoint"}
    referenced = {ref["reference"].rsplit("/", 1)[-1] for s in found for ref in s.get("endpoint", [])}
    assert referenced <= {e["id"] for e in found.included}
    plain = ehr.resources("ImagingStudy", imaging=True, patient=ehr.patient)
    assert [r["id"] for r in plain] == [r["id"] for r in found] and plain.included == []
    at_ehr = ehr.resources("Patient", _id=ehr.patient)  # the default server: the EHR
    assert [r["id"] for r in at_ehr] == [ehr.patient] and at_ehr.included == []
