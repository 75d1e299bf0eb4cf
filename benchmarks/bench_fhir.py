"""FHIR search into a DataFrame over many pages (FHIR R4 3.1.1.5 paging): the kit beside
``pandas.json_normalize`` of the same bundles.

``count`` synthetic Observations (copies of one of the plan's lab results for the patient, with their
own ids, times and values) are added to the EHR's FHIR store. The patient's access token comes from a
real launch. Each client runs in a subprocess of its own (the EHR serves from this process), with the
token in its environment, never on its command line:

- the kit: ``FHIRClient.search("Observation", patient=...)`` -> DataFrame (its flattening of every
  page);
- the baseline: httpx following the Bundle's ``next`` links, then ``pandas.json_normalize`` of the
  resources, the generic way to the same table.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.stats import Figure
from servers.demo_data.clinical import clinical_resources
from servers.demo_data.plan import DemoPlan
from servers.ehr.fhir.store import STORE_FILE, FHIRStore

KIT = r"""
import gc, json, os, sys, time
import httpx, pandas
from s4s_jupyter.client.fhir import FHIRClient
base, patient, count = sys.argv[1:4]
http = httpx.Client(headers={"Authorization": "Bearer " + os.environ["S4S_BENCH_TOKEN"]}, timeout=300)
gc.collect()  # what the imports left for the collector is theirs, not the call's
t = time.perf_counter()
frame = FHIRClient(http, base).search("Observation", patient=patient, _count=count)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "rows": len(frame), "ids": int(frame["id"].nunique())}))
"""

NORMALIZE = r"""
import gc, json, os, sys, time
import httpx, pandas
base, patient, count = sys.argv[1:4]
http = httpx.Client(headers={"Authorization": "Bearer " + os.environ["S4S_BENCH_TOKEN"],
                             "Accept": "application/fhir+json"}, timeout=300)
gc.collect()  # what the imports left for the collector is theirs, not the call's
t = time.perf_counter()
resources = []
url, params = base + "/Observation", {"patient": patient, "_count": count}
while url:
    bundle = http.get(url, params=params).raise_for_status().json()
    params = None
    resources += [e["resource"] for e in bundle.get("entry", [])]
    url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
frame = pandas.json_normalize(resources)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "rows": len(frame), "ids": int(frame["id"].nunique())}))
"""


def add_observations(ehr_data_dir: Path, plan: DemoPlan, patient_id: str, count: int) -> None:
    """Put ``count`` Observations for ``patient_id`` into the EHR's store (in one transaction)."""
    template = next(r for r in clinical_resources(plan) if r["resourceType"] == "Observation"
                    and r["subject"]["reference"] == f"Patient/{patient_id}")
    start = datetime(2015, 1, 1, tzinfo=UTC)

    def make(n: int) -> dict[str, object]:
        r = copy.deepcopy(template)
        when = (start + timedelta(minutes=17 * n)).strftime("%Y-%m-%dT%H:%M:%SZ")
        r["id"] = f"bench-obs-{n:06d}"
        r["effectiveDateTime"] = r["issued"] = when
        r["meta"] = {"versionId": "1", "lastUpdated": when}
        r["valueQuantity"]["value"] = round(4 + (n % 300) / 100, 2)
        return r

    store = FHIRStore(ehr_data_dir / "ehr" / STORE_FILE)
    try:
        store.put_many(make(n) for n in range(count))
    finally:
        store.close()


def run(script: str, base: str, patient: str, token: str, page: int) -> dict[str, float]:
    env = {**os.environ, "S4S_BENCH_TOKEN": token}
    out = subprocess.run([sys.executable, "-c", script, base, patient, str(page)], check=True,
                         capture_output=True, text=True, env=env)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def search(fhir_base: str, patient: str, token: str, page: int, rounds: int) -> Figure:
    fig = Figure("FHIR", f"Observation search into a DataFrame ({page} per page)", "resources/s",
                 "kit FHIRClient.search", "httpx paging + pandas.json_normalize", None)
    rows: dict[str, set[tuple[int, int]]] = {"kit": set(), "json_normalize": set()}
    for n in range(rounds):
        order = [(KIT, fig.ours, "kit"), (NORMALIZE, fig.baseline, "json_normalize")]
        for script, samples, label in (order if n % 2 == 0 else order[::-1]):
            result = run(script, fhir_base, patient, token, page)
            rows[label].add((int(result["rows"]), int(result["ids"])))
            samples.append(result["rows"] / result["seconds"])
    fig.note = "; ".join(f"{label}: " + ", ".join(f"{n} rows of {i} distinct ids" for n, i in sorted(seen))
                         for label, seen in rows.items())
    print(f"  {fig.name}: {fig.value(fig.ours):.0f} vs {fig.value(fig.baseline):.0f} resources/s")
    return fig
