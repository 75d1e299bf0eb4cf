"""Checks shared by the two ways a broker has authorized retrieves answered by our PACS's own code on the
client's connection: handed to the PACS's process (``--pacs-handoff``, test_broker_handoff.py) or answered
in the broker's process from the PACS's store (``--pacs-store``, test_broker_in_process.py).

Each takes a :class:`Answering`: the broker's DICOMweb base, a 40 MB study of patient 0, a count of the
retrieves answered that way so far (the listener's or the in-process PACS's) and the broker's audit
trail."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid
from requests import HTTPError

from servers.demo_data.dicom import instance_bytes
from tests.broker.conftest import Stack, assert_study_as_stored

ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
PREFIX = "1.2.826.0.1.3680043.8.498."


@dataclass
class Answering:
    dicomweb: str  # the broker's DICOMweb base
    large_study: str  # 40 MB, of patient 0: more than loopback's socket buffers hold
    answered: Callable[[], int]  # retrieves answered on the client's connection so far
    audit: Callable[[], list[dict[str, object]]]  # the broker's audit trail, line by line


def large_instance(stack: Stack) -> bytes:
    """One 40 MB instance of patient 0, in a study of its own."""
    patient = stack.plan.patients[0]
    plan = patient.studies[0]
    ds = pydicom.dcmread(io.BytesIO(instance_bytes(patient, plan, plan.series[0], 0)))
    ds.StudyInstanceUID = generate_uid(PREFIX, entropy_srcs=["handoff-large-study"])
    ds.SeriesInstanceUID = generate_uid(PREFIX, entropy_srcs=["handoff-large-series"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
        PREFIX, entropy_srcs=["handoff-large-instance"])
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 4096, 5120, 16, 16, 15
    ds.PixelData = bytes(4096 * 5120 * 2)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def read_answer(sock: socket.socket, pending: bytearray) -> tuple[bytes, bytes]:
    """One HTTP/1.1 answer (head, body by Content-Length) from ``sock``; bytes beyond it stay pending."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(1 << 20)
        assert chunk, "the connection closed before an answer"
        pending += chunk
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, "the connection closed mid-answer"
        body += chunk
    pending[:] = body[length:]
    return head, bytes(body[:length])


def check_retrieves_as_stored(stack: Stack, where: Answering) -> None:
    """dicomweb-client's study, series, instance and frame retrieves come as stored, and are audited."""
    patient = stack.plan.patients[0]
    plan = patient.studies[0]
    series = plan.series[0]
    dw = DICOMwebClient(where.dicomweb, headers=stack.headers(patient))
    before = where.answered()
    datasets = dw.retrieve_study(plan.study_uid)
    assert_study_as_stored(datasets, patient, plan)
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    assert len(dw.retrieve_series(plan.study_uid, series.series_uid)) == len(series.instance_uids)
    one = dw.retrieve_instance(plan.study_uid, series.series_uid, series.instance_uids[0])
    assert one.SOPInstanceUID == series.instance_uids[0]
    frame = dw.retrieve_instance_frames(plan.study_uid, series.series_uid, series.instance_uids[0], [1])
    assert len(frame) == 1 and len(frame[0]) == len(by_uid[series.instance_uids[0]].PixelData)
    assert where.answered() == before + 4
    events = [e for e in where.audit() if plan.study_uid in json.dumps(e)]
    assert events and all(e["outcome"] == "0" for e in events), [e.get("outcomeDesc") for e in events]


def check_one_connection_for_everything(stack: Stack, where: Answering) -> None:
    """One client connection, several requests: retrieves answered on it, then the broker's own answer
    (a search) and its guard (another patient's study) on the same connection."""
    patient, other = stack.plan.patients[0], stack.plan.patients[1]
    plan = patient.studies[0]
    token = stack.token(patient)
    url = httpx.URL(where.dicomweb)
    direct = DICOMwebClient(where.dicomweb, headers=stack.headers(patient)).retrieve_study(plan.study_uid)
    before = where.answered()
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        pending = bytearray()

        def ask(target: str, accept: str = ACCEPT_DICOM) -> tuple[bytes, bytes]:
            sock.sendall(f"GET {url.path}{target} HTTP/1.1\r\nHost: {url.host}\r\nAccept: {accept}\r\n"
                         f"Authorization: Bearer {token}\r\n\r\n".encode())
            return read_answer(sock, pending)

        for _ in range(3):
            head, body = ask(f"/studies/{plan.study_uid}")
            assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in head.lower()
            assert len(body) > sum(len(ds.PixelData) for ds in direct)
        head, body = ask("/studies", "application/dicom+json")  # the broker's own answer, same connection
        assert head.startswith(b"HTTP/1.1 200 ") and plan.study_uid.encode() in body
        head, _ = ask(f"/studies/{other.studies[0].study_uid}")  # the guard, same connection
        assert head.startswith(b"HTTP/1.1 404 ")
        head, _ = ask(f"/studies/{plan.study_uid}/series/{plan.series[0].series_uid}")
        assert head.startswith(b"HTTP/1.1 200 ")
    assert where.answered() == before + 4


def check_searches_and_metadata_stay_with_the_broker(stack: Stack, where: Answering) -> None:
    patient = stack.plan.patients[0]
    plan = patient.studies[0]
    dw = DICOMwebClient(where.dicomweb, headers=stack.headers(patient))
    before = where.answered()
    found = dw.search_for_studies()
    expected = {s.study_uid for s in patient.studies} | {where.large_study}
    assert {s["0020000D"]["Value"][0] for s in found} == expected
    metadata = dw.retrieve_series_metadata(plan.study_uid, plan.series[0].series_uid)
    uris = [m[tag]["BulkDataURI"] for m in metadata for tag in m if "BulkDataURI" in m[tag]]
    assert uris and all(u.startswith(where.dicomweb + "/studies/") for u in uris)
    assert where.answered() == before


def check_the_guard_answers_first(stack: Stack, where: Answering) -> None:
    patient, other = stack.plan.patients[0], stack.plan.patients[1]
    before = where.answered()
    dw = DICOMwebClient(where.dicomweb, headers=stack.headers(patient))
    with pytest.raises(HTTPError) as caught:
        dw.retrieve_study(other.studies[0].study_uid)
    assert caught.value.response.status_code == 404
    study = patient.studies[0].study_uid
    assert httpx.get(f"{where.dicomweb}/studies/{study}").status_code == 401
    bad = httpx.get(f"{where.dicomweb}/studies/{study}", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401
    assert where.answered() == before


def check_a_client_gone_mid_answer_is_audited(stack: Stack, where: Answering) -> None:
    """Outcome 8 in the audit trail, and the next retrieve of the same study is served whole."""
    patient = stack.plan.patients[0]
    audited = len(where.audit())
    with httpx.Client(timeout=30) as client, client.stream(
            "GET", f"{where.dicomweb}/studies/{where.large_study}",
            headers={**stack.headers(patient), "Accept": ACCEPT_DICOM}) as r:
        assert r.status_code == 200 and int(r.headers["content-length"]) > 40_000_000
        next(r.iter_raw(1024))
    # the event of this retrieve, not just the next one: the audit line of a request is written once its
    # answer has gone out, so the previous test's last retrieve may be audited after ``audited`` was read
    def this_retrieve() -> list[dict[str, object]]:
        return [e for e in where.audit()[audited:] if where.large_study in json.dumps(e)]

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not this_retrieve():
        time.sleep(0.05)
    events = this_retrieve()
    assert len(events) == 1, events
    assert events[0]["outcome"] == "8" and "did not complete" in json.dumps(events[0])
    dw = DICOMwebClient(where.dicomweb, headers=stack.headers(patient))
    assert len(dw.retrieve_study(where.large_study)[0].PixelData) == 4096 * 5120 * 2
