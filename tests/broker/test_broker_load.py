"""Concurrent load from several patients' tokens: every answer holds only its own patient's data.

Threads with different patients' tokens search, retrieve whole studies, series, metadata and frames,
and try each other's studies, at the same time and through the same broker (shared caches, shared
upstream connection pool). Every body is searched for every other patient's identifiers (PatientID,
name, study/series/instance UIDs), and every multipart part is parsed as DICOM.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pydicom

from s4s_jupyter.core.multipart import iter_parts, parse_content_type
from servers.demo_data.plan import DemoPatient
from tests.broker.conftest import Stack


def _markers(p: DemoPatient) -> list[bytes]:
    uids = [p.mrn, p.dicom_name.split("^")[0] + "^" + p.given]
    for s in p.studies:
        uids.append(s.study_uid)
        for se in s.series:
            uids += [se.series_uid, *se.instance_uids]
    return [u.encode() for u in uids]


def test_no_byte_of_another_patients_data_leaks_under_concurrent_load(stack: Stack) -> None:
    run_load(stack, stack.broker_url)


def run_load(stack: Stack, broker_url: str) -> None:
    """The load above against the broker at ``broker_url`` (its FHIR and DICOMweb bases under it)."""
    patients = list(stack.plan.patients)
    tokens = {p.id: stack.token(p) for p in patients}
    foreign = {p.id: [m for q in patients if q.id != p.id for m in _markers(q)] for p in patients}
    errors: list[str] = []
    counts = {"ok": 0, "denied": 0}
    lock = threading.Lock()

    def work(p: DemoPatient, round_: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[p.id]}"}
        others = [q for q in patients if q.id != p.id]
        base = broker_url + "/dicom-web"
        with httpx.Client(timeout=60, headers=headers) as http:
            for i, study in enumerate(p.studies):
                se = study.series[i % len(study.series)]
                urls = [f"{broker_url}/fhir/ImagingStudy?patient={p.id}&_include=ImagingStudy:endpoint",
                        f"{base}/studies", f"{base}/studies/{study.study_uid}/series",
                        f"{base}/studies/{study.study_uid}",
                        f"{base}/studies/{study.study_uid}/series/{se.series_uid}",
                        f"{base}/studies/{study.study_uid}/metadata",
                        f"{base}/studies/{study.study_uid}/series/{se.series_uid}/instances/"
                        f"{se.instance_uids[0]}/frames/1"]
                for url in urls:
                    r = http.get(url)
                    if r.status_code != 200:
                        errors.append(f"{p.id} {url}: {r.status_code}")
                        continue
                    body = r.content
                    leaked = [m for m in foreign[p.id] if m in body]
                    if leaked:
                        errors.append(f"{p.id} got {leaked[:2]} from {url}")
                    ctype, params = parse_content_type(r.headers["content-type"])
                    if ctype == "multipart/related" and params.get("type") == "application/dicom":
                        for _, part in iter_parts(body, params["boundary"]):
                            ds = pydicom.dcmread(io.BytesIO(part))
                            if ds.PatientID != p.mrn or ds.StudyInstanceUID != study.study_uid:
                                errors.append(f"{p.id} got {ds.PatientID} {ds.StudyInstanceUID}")
                    with lock:
                        counts["ok"] += 1
                # someone else's study, by this token: the same 404 as a study that does not exist
                q = others[(round_ + i) % len(others)]
                r = http.get(f"{base}/studies/{q.studies[0].study_uid}")
                if r.status_code != 404 or any(m in r.content for m in foreign[p.id]):
                    errors.append(f"{p.id} reached {q.id}'s study: {r.status_code}")
                with lock:
                    counts["denied"] += 1

    jobs = [(p, n) for n in range(4) for p in patients]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        for f in [pool.submit(work, p, n) for p, n in jobs]:
            f.result()
    assert not errors, errors[:10]
    assert counts["ok"] == sum(len(p.studies) for p in patients) * 4 * 7
    assert counts["denied"] == sum(len(p.studies) for p in patients) * 4
