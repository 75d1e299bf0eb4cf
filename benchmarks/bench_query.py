"""QIDO-RS (PS3.18 10.6) and WADO-RS metadata (PS3.18 10.4.1.1.2) latency: our PACS vs Orthanc.

Each request is sent to one system then the other (alternating which goes first), ``requests`` times,
on a kept-alive httpx connection per system; p50 and p95 of the latencies are compared.
"""

from __future__ import annotations

import time

import httpx

from benchmarks.clients import DICOM_JSON
from benchmarks.stats import Figure, Target

NOT_SLOWER = Target("<=", 1.0, "ours <= Orthanc")
INSTANCES = Target("<=", 0.2, "ours <= 0.2 x Orthanc")
METADATA = Target("<=", 0.25, "ours <= 0.25 x Orthanc")


def latencies(ours: str, orthanc: str, path: str, params: dict[str, str], requests: int,
              check: int | None = None) -> tuple[list[float], list[float]]:
    """Milliseconds per request on each base URL; ``check``: the number of results both must answer."""
    samples: dict[str, list[float]] = {ours: [], orthanc: []}
    with httpx.Client(timeout=120) as client:
        for base in (ours, orthanc):  # first request untimed: connection, caches
            r = client.get(base + path, params=params, headers={"Accept": DICOM_JSON})
            r.raise_for_status()
            if check is not None and len(r.json()) != check:
                raise SystemExit(f"{base}{path} {params}: {len(r.json())} results, expected {check}")
        for n in range(requests):
            for base in ((ours, orthanc) if n % 2 == 0 else (orthanc, ours)):
                start = time.perf_counter()
                r = client.get(base + path, params=params, headers={"Accept": DICOM_JSON})
                r.read()
                samples[base].append((time.perf_counter() - start) * 1000)
                r.raise_for_status()
    return samples[ours], samples[orthanc]


def queries(ours: str, orthanc: str, patient_id: str, date_range: tuple[str, int], study_uid: str,
            series_uid: str, instances: int, requests: int) -> list[Figure]:
    """QIDO at every level and metadata of a study and of a series; p50 and p95 (metadata: p50)."""
    rows = [
        ("QIDO-RS", "studies by PatientID", "/studies", {"PatientID": patient_id}, None, NOT_SLOWER),
        ("QIDO-RS", f"studies by date range ({date_range[1]} studies)", "/studies",
         {"StudyDate": date_range[0]}, date_range[1], NOT_SLOWER),
        ("QIDO-RS", "series of a study", f"/studies/{study_uid}/series", {}, None, NOT_SLOWER),
        ("QIDO-RS", f"instances of a {instances}-instance series",
         f"/studies/{study_uid}/series/{series_uid}/instances", {}, instances, INSTANCES),
        ("WADO-RS metadata", "study metadata", f"/studies/{study_uid}/metadata", {}, None, METADATA),
        ("WADO-RS metadata", "series metadata", f"/studies/{study_uid}/series/{series_uid}/metadata", {},
         instances, METADATA),
    ]
    figures = []
    for group, name, path, params, check, target in rows:
        mine, theirs = latencies(ours, orthanc, path, params, requests, check)
        for stat in (("p50",) if group.startswith("WADO") else ("p50", "p95")):
            fig = Figure(group, f"{name} {stat}", "ms", "our PACS", "Orthanc", target, stat=stat,
                         ours=mine, baseline=theirs)
            figures.append(fig)
            print(f"  {fig.name}: {fig.value(fig.ours):.1f} vs {fig.value(fig.baseline):.1f} ms")
    return figures
