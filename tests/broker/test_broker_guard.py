"""Cross-patient, token, path and header cases: what the broker lets through, and what never leaves it."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from tests.broker.conftest import Stack
from tests.broker.peers import UPSTREAM_ONLY_HEADERS, relay


def raw_get(url: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Send ``path`` exactly as written (no client-side normalisation of ``..`` or ``%2F``)."""
    host, port = url.split("//")[1].split(":")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall("\r\n".join(lines).encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


#: a path the broker cannot parse is a 400 (bad UID) or a 404 (no such resource); never a 200
REFUSED = (400, 404)


def test_paths_that_try_to_escape_are_refused(stack: Stack) -> None:
    mine, other = stack.plan.patients[0], stack.plan.patients[1]
    headers = stack.headers(mine)
    s, o = mine.studies[0], other.studies[0]
    mine_series, other_series = s.series[0], o.series[0]
    attempts: dict[str, tuple[int, ...]] = {
        f"/dicom-web/studies/{s.study_uid}/../{o.study_uid}": REFUSED,
        f"/dicom-web/studies/{s.study_uid}/..%2F{o.study_uid}": REFUSED,
        f"/dicom-web/studies/{s.study_uid}%2F..%2F{o.study_uid}": REFUSED,
        f"/dicom-web/studies/{s.study_uid}/series/..%2F..%2Fstudies%2F{o.study_uid}": REFUSED,
        f"/dicom-web/studies/{s.study_uid}/series/{mine_series.series_uid}/instances/"
        f"{mine_series.instance_uids[0]}/bulkdata/..%2F..%2F..%2F{o.study_uid}": REFUSED,
        f"/dicom-web/studies/{s.study_uid}/series/{mine_series.series_uid}/instances/"
        f"{mine_series.instance_uids[0]}/frames/1/../../../../../../studies/{o.study_uid}": REFUSED,
        f"/dicom-web/studies/{s.study_uid}/series/{mine_series.series_uid}/instances/"
        f"{mine_series.instance_uids[0]}/frames/0": (400,),
        f"/dicom-web/studies/{s.study_uid}/nonsense": REFUSED,
        "/dicom-web/studies/1.2.3/series/": REFUSED,
        "/dicom-web/": REFUSED,
        "/dicom-web/patients": REFUSED,
        # another patient's series under my study, and my series under their study
        f"/dicom-web/studies/{s.study_uid}/series/{other_series.series_uid}": REFUSED,
        f"/dicom-web/studies/{s.study_uid}/series/{other_series.series_uid}/metadata": REFUSED,
        f"/dicom-web/studies/{s.study_uid}/series/{mine_series.series_uid}/instances/"
        f"{other_series.instance_uids[0]}": REFUSED,
        f"/dicom-web/studies/{o.study_uid}/series/{mine_series.series_uid}": REFUSED,
        f"/dicom-web/studies/{s.study_uid}/series/{other_series.series_uid}/instances": REFUSED,
    }
    for path, status in attempts.items():
        got, body = raw_get(stack.broker_url, path, headers)
        assert got in status, (path, got, body[-300:])
        # error reports may echo the path the client sent, never anything the PACS holds
        assert other.mrn.encode() not in body and b"00100020" not in body


def test_qido_is_always_filtered_to_the_tokens_patient(stack: Stack) -> None:
    mine, other = stack.plan.patients[0], stack.plan.patients[1]
    headers = stack.headers(mine)
    base = stack.broker_dicomweb
    for params in ({"PatientID": other.mrn}, {"PatientID": "*"}, {"00100020": other.mrn},
                   {"patientid": other.mrn}, {"StudyInstanceUID": other.studies[0].study_uid},
                   {"PatientName": f"{other.family}*"}, {}):
        for level in ("studies", "series", "instances"):
            r = httpx.get(f"{base}/{level}", params=params, headers=headers)
            assert r.status_code in (200, 204), (level, params, r.text)
            results = r.json() if r.status_code == 200 else []
            assert other.mrn not in r.text
            assert all(x["00100020"]["Value"][0] == mine.mrn for x in results)
    # nothing of the other patient: a 204 (PS3.18 10.6.3), not an error
    r = httpx.get(f"{base}/studies", params={"StudyInstanceUID": other.studies[0].study_uid}, headers=headers)
    assert r.status_code == 204
    # QIDO answers JSON only
    xml = {**headers, "Accept": "application/dicom+xml"}
    assert httpx.get(f"{base}/studies", headers=xml).status_code == 406


def test_tokens_and_hop_by_hop_headers_never_cross_the_broker(stack: Stack) -> None:
    patient = stack.plan.patients[0]
    token = stack.token(patient)
    upstream, record = relay(stack.loop, stack.pacs_dicomweb, mode="headers")
    url, _ = stack.start_broker(upstream, upstream_authorization="Basic YnJva2VyOnBhY3M=")
    study = patient.studies[0]
    headers = {"Authorization": f"Bearer {token}", "Cookie": "session=abc", "Proxy-Authorization": "Basic x",
               "Connection": "keep-alive, X-Hop", "X-Hop": "1", "TE": "trailers"}
    for path in (f"/dicom-web/studies/{study.study_uid}", "/dicom-web/studies",
                 f"/dicom-web/studies/{study.study_uid}/metadata",
                 f"/fhir/ImagingStudy?patient={patient.id}"):
        r = httpx.get(url + path, headers=headers)
        assert r.status_code == 200, (path, r.text[:300])
        for name in UPSTREAM_ONLY_HEADERS:
            if name.lower() != "connection":
                assert name.lower() not in r.headers, (path, name)
        assert "x-internal-route" not in r.headers.get("connection", "").lower()
    assert record.requests
    for req in record.requests:
        sent = json.dumps(req)
        assert token not in sent
        lowered = {k.lower(): v for k, v in req["headers"].items()}
        assert lowered.get("authorization") == "Basic YnJva2VyOnBhY3M="  # the broker's own, configured
        for name in ("cookie", "proxy-authorization", "x-hop", "te"):
            assert name not in lowered, (name, req["path"])


def test_audit_trail_has_one_audit_event_per_request(stack: Stack) -> None:
    patient, other = stack.plan.patients[2], stack.plan.patients[0]
    headers = stack.headers(patient)
    log = stack.broker.settings.data_dir / "audit.jsonl"  # type: ignore[union-attr, operator]
    before = len(log.read_text().splitlines()) if log.exists() else 0
    study = patient.studies[0].study_uid
    calls = [(f"{stack.broker_fhir}/ImagingStudy?patient={patient.id}", 200, "search", "0"),
             (f"{stack.broker_dicomweb}/studies/{study}", 200, "retrieve", "0"),
             (f"{stack.broker_dicomweb}/studies/{other.studies[0].study_uid}", 404, "retrieve", "4"),
             (f"{stack.broker_fhir}/ImagingStudy?patient={other.id}", 403, "search", "4")]
    for url, status, _, _ in calls:
        assert httpx.get(url, headers=headers).status_code == status
    assert httpx.get(f"{stack.broker_dicomweb}/studies/{study}").status_code == 401
    # the event is written when the broker has finished the request, which may be just after the
    # client received the last byte
    deadline = time.monotonic() + 5
    while len(log.read_text().splitlines()) < before + len(calls) + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(x) for x in log.read_text().splitlines()[before:]]
    assert len(lines) == len(calls) + 1
    for event, (_, status, _kind, outcome) in zip(lines, calls, strict=False):
        AuditEvent.model_validate(event)
        assert event["outcome"] == outcome and event["outcomeDesc"].startswith(str(status))
        assert event["agent"][0]["who"]["identifier"]["value"] == "s4s-jupyter"
        assert event["entity"][0]["what"]["reference"] == f"Patient/{patient.id}"
    assert lines[1]["entity"][1]["what"]["identifier"]["value"] == f"urn:oid:{study}"
    assert lines[-1]["agent"][0]["who"]["identifier"]["value"] == "(unauthenticated)"
    assert stack.token(patient) not in log.read_text()


@pytest.mark.parametrize("scope", ["launch/patient patient/ImagingStudy.rs",
                                   "launch/patient patient/ImagingStudy.read"])
def test_narrow_imaging_scopes_are_enough(stack: Stack, scope: str) -> None:
    patient = stack.plan.patients[2]
    headers = stack.headers(patient, scope=scope)
    r = httpx.get(f"{stack.broker_fhir}/ImagingStudy", params={"patient": patient.id}, headers=headers)
    assert r.status_code == 200 and r.json()["total"] == len(patient.studies)
    assert httpx.get(f"{stack.broker_dicomweb}/studies/{patient.studies[0].study_uid}/metadata",
                     headers=headers).status_code == 200
