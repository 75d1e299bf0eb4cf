"""Upstream and introspection failures: 502 refused/garbage, 504 timeout, 503 + Retry-After passed
through, a mid-stream cut seen by the client as a broken transfer, and fail-closed authorization."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import requests
from dicomweb_client import DICOMwebClient

from tests.broker.conftest import Stack
from tests.broker.peers import RawPeers, refused_url, relay


@pytest.fixture
def raw_peers(stack: Stack) -> Iterator[RawPeers]:
    peers = RawPeers(stack.loop)
    yield peers
    peers.close()


def _get(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=20)


def test_refused_garbage_and_stalled_upstreams(stack: Stack, raw_peers: RawPeers) -> None:
    patient = stack.plan.patients[0]
    headers = stack.headers(patient)
    study = patient.studies[0].study_uid
    cases = [(refused_url(), 502), (raw_peers.start("garbage"), 502), (raw_peers.start("stall"), 504)]
    for upstream, status in cases:
        url, _ = stack.start_broker(upstream, upstream_timeout=0.5)
        for path in (f"/dicom-web/studies/{study}", "/dicom-web/studies",
                     f"/dicom-web/studies/{study}/metadata"):
            r = _get(url + path, headers)
            assert r.status_code == status, (upstream, path, r.text)
            assert r.json()["status"] == status
        r = _get(f"{url}/fhir/ImagingStudy?patient={patient.id}", headers)
        assert r.status_code == status
        assert r.json()["resourceType"] == "OperationOutcome"


def test_503_with_retry_after_is_passed_through(stack: Stack) -> None:
    patient = stack.plan.patients[0]
    headers = stack.headers(patient)
    upstream, _ = relay(stack.loop, stack.pacs_dicomweb, mode="503")
    url, _ = stack.start_broker(upstream)
    for path in (f"/dicom-web/studies/{patient.studies[0].study_uid}", "/dicom-web/studies",
                 f"/fhir/ImagingStudy?patient={patient.id}"):
        r = _get(url + path, headers)
        assert r.status_code == 503 and r.headers["retry-after"] == "7", (path, r.text)


@pytest.mark.parametrize("mode", ["cut", "cut-length", "cut-stall", "cut-length-stall"])
def test_mid_stream_cut_is_a_broken_transfer(stack: Stack, mode: str) -> None:
    """The PACS closes mid-answer (chunked, or short of its Content-Length), or stops sending for
    longer than the broker's idle timeout (Content-Length answers take the zero-copy path)."""
    patient = stack.plan.patients[0]
    token = stack.token(patient)
    study = patient.studies[0].study_uid
    upstream, _ = relay(stack.loop, stack.pacs_dicomweb, mode=mode)
    url, ctx = stack.start_broker(upstream, upstream_timeout=1.0)
    with httpx.stream("GET", f"{url}/dicom-web/studies/{study}", timeout=20,
                      headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status_code == 200
        boundary = r.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
        got = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in r.iter_raw():
                got += chunk
    assert got, "the answer started"
    assert f"--{boundary}--".encode() not in got, "no close delimiter: the body is visibly incomplete"
    # dicomweb-client does not get a complete-looking study either
    client = DICOMwebClient(f"{url}/dicom-web", headers={"Authorization": f"Bearer {token}"})
    client.set_http_retry_params(retry=False)  # its default retries a broken transfer with back-off
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError,
                        ValueError)):
        client.retrieve_study(study)
    # the audit trail says so
    lines = (ctx.settings.data_dir / "audit.jsonl").read_text().splitlines()  # type: ignore[operator]
    assert any('"outcome":"8"' in line and "broke off" in line for line in lines)


def test_introspection_unreachable_fails_closed_and_nothing_goes_upstream(stack: Stack) -> None:
    patient = stack.plan.patients[0]
    headers = stack.headers(patient)
    upstream, record = relay(stack.loop, stack.pacs_dicomweb)
    nowhere = refused_url().replace("/dicom-web", "/introspect")
    url, _ = stack.start_broker(upstream, introspection_url=nowhere)
    study = patient.studies[0].study_uid
    for path in (f"/dicom-web/studies/{study}", "/dicom-web/studies",
                 f"/fhir/ImagingStudy?patient={patient.id}", f"/fhir/ImagingStudy/{study}"):
        r = _get(url + path, headers)
        assert r.status_code == 502, (path, r.text)
    assert record.requests == []
    # an introspection endpoint that refuses the broker's credentials: also closed
    url, _ = stack.start_broker(upstream, client_secret="wrong-secret")
    assert _get(f"{url}/dicom-web/studies", headers).status_code == 502
    assert record.requests == []
