"""The ImagingStudy <-> DICOM mapping (s4s_jupyter.core.imaging_study) on real DICOM JSON.

The DICOM JSON comes from real Part 10 datasets of the demo generator (pydicom's ``to_json_dict``, the
PS3.18 F.2 model), reduced to what a QIDO-RS answer carries at each level. Produced resources are
validated with ``fhir.resources`` (its R4B models: ImagingStudy and Endpoint are unchanged from R4).
"""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy

from s4s_jupyter.core import dicomjson
from s4s_jupyter.core.errors import FHIRError
from s4s_jupyter.core.imaging_study import (
    INSTANCE_FIELDS,
    SERIES_FIELDS,
    STUDY_FIELDS,
    MappingOptions,
    dicom_datetime,
    imaging_study,
    parse_identifier,
    requires_access_token,
    study_reference,
    study_uid_of,
    wado_endpoint,
)
from servers.demo_data.dicom import make_dataset
from servers.demo_data.plan import DemoPlan


def _qido(plan: DemoPlan) -> tuple[Any, Any, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    patient = plan.patients[0]
    study = patient.studies[0]
    instances: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    for s in study.series:
        for i in range(len(s.instance_uids)):
            full = make_dataset(patient, study, s, i).to_json_dict(bulk_data_threshold=1024,
                                                                    bulk_data_element_handler=lambda e: "x")
            instances.append({dicomjson.tag_of(k): full[dicomjson.tag_of(k)] for k in INSTANCE_FIELDS})
        full = make_dataset(patient, study, s, 0).to_json_dict()
        row = {dicomjson.tag_of(k): full[dicomjson.tag_of(k)] for k in SERIES_FIELDS
               if dicomjson.tag_of(k) in full}
        row.update(dict([dicomjson.element("NumberOfSeriesRelatedInstances", len(s.instance_uids))]))
        series.append(row)
    first = make_dataset(patient, study, study.series[0], 0).to_json_dict()
    study_json = {dicomjson.tag_of(k): first[dicomjson.tag_of(k)] for k in STUDY_FIELDS
                  if dicomjson.tag_of(k) in first}
    study_json.update(dicomjson.build(ModalitiesInStudy=sorted({s.modality for s in study.series}),
                                      NumberOfStudyRelatedSeries=len(study.series),
                                      NumberOfStudyRelatedInstances=study.number_of_instances))
    return patient, study, study_json, series, instances


def test_study_maps_to_a_valid_r4_imaging_study(small_plan: DemoPlan) -> None:
    patient, study, study_json, series, instances = _qido(small_plan)
    resource = imaging_study(study_json, series, instances, patient_id=patient.id, endpoint_id="wado-rs")
    ImagingStudy.model_validate(resource)  # raises on any R4 structure error
    assert resource["id"] == study.study_uid
    assert resource["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{study.study_uid}"}
    assert resource["identifier"][1]["value"] == study.accession_number
    assert resource["status"] == "available"
    assert resource["subject"] == {"reference": f"Patient/{patient.id}"}
    assert resource["started"] == study.started.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert resource["modality"] == [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                     "code": study.modality}]
    assert resource["numberOfSeries"] == len(study.series)
    assert resource["numberOfInstances"] == study.number_of_instances
    assert resource["description"] == study.description
    assert resource["endpoint"] == [{"reference": "Endpoint/wado-rs"}]
    assert [s["uid"] for s in resource["series"]] == [s.series_uid for s in study.series]
    for got, planned in zip(resource["series"], study.series, strict=True):
        assert got["number"] == planned.number
        assert got["modality"]["code"] == planned.modality
        assert got["numberOfInstances"] == len(planned.instance_uids)
        assert [i["uid"] for i in got["instance"]] == list(planned.instance_uids)
        assert [i["number"] for i in got["instance"]] == list(range(1, len(planned.instance_uids) + 1))
        assert {i["sopClass"]["code"] for i in got["instance"]} == {f"urn:oid:{planned.sop_class_uid}"}
        assert {i["sopClass"]["system"] for i in got["instance"]} == {"urn:ietf:rfc:3986"}


def test_endpoint_is_a_valid_wado_rs_endpoint_requiring_the_token() -> None:
    ep = wado_endpoint("wado-rs", "http://127.0.0.1:9/dicom-web/")
    Endpoint.model_validate(ep)
    assert ep["address"] == "http://127.0.0.1:9/dicom-web"
    assert ep["connectionType"] == {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                                    "code": "dicom-wado-rs"}
    assert ep["status"] == "active" and ep["payloadType"]
    assert requires_access_token(ep) is True
    assert requires_access_token(wado_endpoint("x", "http://h/d", requires_access_token=False)) is False


def test_the_kit_reads_back_what_the_broker_writes(small_plan: DemoPlan) -> None:
    patient, study, study_json, series, instances = _qido(small_plan)
    resource = imaging_study(study_json, series, instances, patient_id=patient.id, endpoint_id="wado-rs")
    ep = wado_endpoint("wado-rs", "http://broker.example/dicom-web")
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": [
        {"fullUrl": f"http://broker.example/fhir/ImagingStudy/{resource['id']}", "resource": resource,
         "search": {"mode": "match"}},
        {"fullUrl": "http://broker.example/fhir/Endpoint/wado-rs", "resource": ep,
         "search": {"mode": "include"}},
    ]}
    Bundle.model_validate(bundle)
    ref = study_reference(resource, [ep])
    assert ref.study_uid == study.study_uid
    assert ref.series_uids == tuple(s.series_uid for s in study.series)
    assert [(e.address, e.requires_access_token) for e in ref.endpoints] == [
        ("http://broker.example/dicom-web", True)]
    assert ref.patient_reference == f"Patient/{patient.id}"
    # a contained Endpoint (the IG's other form) and an absolute reference are read as well
    contained = dict(resource, contained=[dict(ep, id="e")], endpoint=[{"reference": "#e"}])
    assert study_reference(contained).endpoints[0].address == "http://broker.example/dicom-web"
    absolute = dict(resource, endpoint=[{"reference": "http://broker.example/fhir/Endpoint/wado-rs"}])
    assert study_reference(absolute, {"Endpoint/wado-rs": ep}).endpoints[0].requires_access_token


@pytest.mark.parametrize("value", ["urn:dicom:uid|1.2.840.1", "urn:dicom:uid|urn:oid:1.2.840.1",
                                   "urn:oid:1.2.840.1", "|urn:oid:1.2.840.1"])
def test_identifier_search_forms(value: str) -> None:
    assert parse_identifier(value) == "1.2.840.1"


@pytest.mark.parametrize("value", ["1.2.840.1", "urn:dicom:uid|1.2.840.01", "http://x|urn:oid:1.2",
                                   "urn:oid:../../etc", "urn:dicom:uid|", "urn:oid:1." + "1" * 70])
def test_bad_identifiers_are_400(value: str) -> None:
    with pytest.raises(FHIRError) as err:
        parse_identifier(value)
    assert err.value.status == 400


def test_dicom_date_time_becomes_fhir_date_time() -> None:
    assert dicom_datetime("20240131", "081500") == "2024-01-31T08:15:00Z"
    assert dicom_datetime("20240131", "0815") == "2024-01-31T08:15:00Z"
    assert dicom_datetime("20240131", "081500.25") == "2024-01-31T08:15:00.250000Z"
    assert dicom_datetime("20240131", "081500", "-0500") == "2024-01-31T08:15:00-05:00"
    assert dicom_datetime("20240131", "081500", default_tz=timezone(timedelta(hours=1))) == \
        "2024-01-31T08:15:00+01:00"
    assert dicom_datetime("20240131", None) == "2024-01-31"
    assert dicom_datetime("20241331", "081500") is None
    assert dicom_datetime(None, "081500") is None
    assert dicom_datetime("20240131", "99") == "2024-01-31"


def test_counts_fall_back_to_study_attributes_and_bad_uids_are_skipped(small_plan: DemoPlan) -> None:
    _, study, study_json, series, instances = _qido(small_plan)
    bad = dict(instances[0])
    bad.update(dict([dicomjson.element("SOPInstanceUID", "1.2.x")]))
    resource = imaging_study(study_json, [], [], patient_id="p", endpoint_id="e",
                             options=MappingOptions())
    assert resource["numberOfSeries"] == len(study.series)
    assert resource["numberOfInstances"] == study.number_of_instances
    assert "series" not in resource
    resource = imaging_study(study_json, series, [bad, *instances[1:]], patient_id="p", endpoint_id="e")
    assert resource["numberOfInstances"] == study.number_of_instances - 1
    ImagingStudy.model_validate(resource)
    assert study_uid_of(resource) == study.study_uid
    with pytest.raises(ValueError):
        imaging_study({}, [], [], patient_id="p", endpoint_id="e")
