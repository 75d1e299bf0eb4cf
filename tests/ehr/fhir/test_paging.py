"""Keyset paging of searches (R4 3.1.1.3): every match exactly once through ``next`` and back through
``previous``, page links that cannot be edited into another page or another search, and a page query
whose cost does not grow with its position (checked on SQLite's query plan and its count of virtual
machine steps, both deterministic; no timing)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from servers.ehr.fhir.query import parse_search
from servers.ehr.fhir.store import STORE_FILE, FHIRStore
from tests.ehr.conftest import RunningEHR
from tests.ehr.fhir.conftest import FHIRClient, mint, validate_r4

#: enough matches for many pages of 100, few enough for a fast test
N = 3000
BASE = "http://ehr.test/fhir"


def _observations(patient: str, n: int, prefix: str = "page-obs") -> Iterator[dict[str, Any]]:
    """``n`` Observations for ``patient``; three at a time share a lastUpdated (ties broken by id)."""
    start = datetime(2014, 1, 1, tzinfo=UTC)
    for i in range(n):
        when = (start + timedelta(minutes=7 * (i // 3))).strftime("%Y-%m-%dT%H:%M:%SZ")
        yield {"resourceType": "Observation", "id": f"{prefix}-{(i * 7919) % n:05d}", "status": "final",
               "meta": {"versionId": "1", "lastUpdated": when},
               "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
               "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": when,
               "valueQuantity": {"value": i % 200, "unit": "mg/dL", "system": "http://unitsofmeasure.org",
                                 "code": "mg/dL"}}


@pytest.fixture(scope="module")
def big_ehr(start_ehr: Callable[..., RunningEHR]) -> RunningEHR:
    """An EHR of its own whose first patient has ``N`` extra Observations (the shared EHR's data is the
    other tests' oracle)."""
    ehr = start_ehr()
    store = FHIRStore(Path(ehr.settings.data_dir) / "ehr" / STORE_FILE)
    try:
        store.put_many(_observations(ehr.plan.patients[0].id, N))
    finally:
        store.close()
    return ehr


def _links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


def _outcome(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body: dict[str, Any] = r.json()
    assert body["resourceType"] == "OperationOutcome"
    validate_r4(body)
    return body


def test_next_returns_every_match_once_in_order_and_previous_walks_back(big_ehr: RunningEHR) -> None:
    patient = big_ehr.plan.patients[0].id
    fhir = FHIRClient(big_ehr.fhir_base, mint(big_ehr, "launch/patient patient/*.rs", patient).token)
    store = FHIRStore(Path(big_ehr.settings.data_dir) / "ehr" / STORE_FILE)
    try:
        expected_total = store.search("Observation", (), patient=patient, count=0).total
    finally:
        store.close()
    assert expected_total > N
    r = fhir.get("Observation", {"patient": patient, "_count": "100"})
    pages: list[list[str]] = []
    order: list[tuple[str, str]] = []
    urls: list[str] = []
    while True:
        assert r.status_code == 200, r.text
        bundle = r.json()
        assert bundle["total"] == expected_total
        entries = [e["resource"] for e in bundle.get("entry", [])]
        pages.append([e["id"] for e in entries])
        order += [(e["meta"]["lastUpdated"], e["id"]) for e in entries]
        links = _links(bundle)
        urls.append(links["self"])
        if "next" not in links:
            break
        query = parse_qs(urlsplit(links["next"]).query)
        # the link still carries the whole query, the token never
        assert query["patient"] == [patient] and query["_count"] == ["100"] and "_cursor" in query
        assert str(fhir.token) not in links["next"]
        r = fhir.get(links["next"])
    seen = [i for page in pages for i in page]
    assert len(seen) == len(set(seen)) == expected_total
    assert order == sorted(order)
    assert all(len(p) == 100 for p in pages[:-1]) and len(pages) == -(-expected_total // 100)
    validate_r4(bundle)
    # back from the last page through previous links: the same pages, in reverse
    back = [pages[-1]]
    while "previous" in (links := _links(bundle)):
        bundle = fhir.get(links["previous"]).json()
        back.append([e["resource"]["id"] for e in bundle.get("entry", [])])
    assert back[::-1] == pages
    # a page's self link answers that page again
    middle = fhir.get(urls[len(urls) // 2]).json()
    assert [e["resource"]["id"] for e in middle["entry"]] == pages[len(urls) // 2]


def test_page_links_cannot_be_edited(big_ehr: RunningEHR) -> None:
    patient, other = big_ehr.plan.patients[0].id, big_ehr.plan.patients[1].id
    fhir = FHIRClient(big_ehr.fhir_base, mint(big_ehr, "launch/patient patient/*.rs", patient).token)
    first = fhir.get("Observation", {"patient": patient, "_count": "50"}).json()
    nxt = _links(first)["next"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(nxt).query).items()}
    payload, mac = query["_cursor"].split(".")
    base = f"{big_ehr.fhir_base}/Observation?"
    edits = {
        "payload": {**query, "_cursor": ("A" if payload[0] != "A" else "B") + payload[1:] + "." + mac},
        "no mac": {**query, "_cursor": payload},
        "garbage": {**query, "_cursor": "%%%.@@@"},
        "another _count": {**query, "_count": "500"},
        "another criterion": {**query, "code": "http://loinc.org|2339-0"},
        "with _offset": {**query, "_offset": "10"},
    }
    for name, params in edits.items():
        body = _outcome(fhir.get(base + urlencode(params)), 400)
        assert body["issue"][0]["code"] == "invalid", name
    # the cursor of another search is refused too, and the patient-bound token cannot reach another
    # patient whatever the link says (403 before the cursor is even read)
    codes = fhir.get("Observation", {"patient": patient, "code": "http://loinc.org|2339-0",
                                     "_count": "50"}).json()
    moved = {**query, "_cursor": parse_qs(urlsplit(_links(codes)["next"]).query)["_cursor"][0]}
    _outcome(fhir.get(base + urlencode(moved)), 400)
    _outcome(fhir.get(base + urlencode({**query, "patient": other})), 403)
    # a system token: editing the patient in a link is refused, not answered with the other's data
    backend = FHIRClient(big_ehr.fhir_base, mint(big_ehr, "system/Observation.rs", None,
                                                 client_id="s4s-broker").token)
    sys_next = _links(backend.get("Observation", {"patient": patient, "_count": "20"}).json())["next"]
    _outcome(backend.get(sys_next.replace(f"patient={patient}", f"patient={other}")), 400)
    # and a patient token cannot use the system token's link (bound to the token's patient): 400
    _outcome(fhir.get(sys_next), 400)
    assert backend.get(sys_next).status_code == 200


def test_offset_still_starts_a_search_and_its_next_link_continues(big_ehr: RunningEHR) -> None:
    patient = big_ehr.plan.patients[0].id
    fhir = FHIRClient(big_ehr.fhir_base, mint(big_ehr, "launch/patient patient/*.rs", patient).token)
    whole = fhir.get("Observation", {"patient": patient, "_count": "60"}).json()
    ids = [e["resource"]["id"] for e in whole["entry"]]
    at = fhir.get("Observation", {"patient": patient, "_count": "20", "_offset": "20"}).json()
    assert [e["resource"]["id"] for e in at["entry"]] == ids[20:40]
    assert parse_qs(urlsplit(_links(at)["previous"]).query).get("_offset") is None  # = first page
    nxt = fhir.get(_links(at)["next"]).json()
    assert [e["resource"]["id"] for e in nxt["entry"]] == ids[40:60]
    assert nxt["total"] == whole["total"]
    past = fhir.get("Observation", {"patient": patient, "_count": "20", "_offset": "999999"}).json()
    assert "entry" not in past and "next" not in _links(past)
    assert parse_qs(urlsplit(_links(past)["previous"]).query)["_offset"] == ["999979"]


# -- the cost of a page does not depend on its position -----------------------------------------------


@pytest.fixture(scope="module")
def paged_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FHIRStore, Path]]:
    path = tmp_path_factory.mktemp("paging") / "fhir.sqlite"
    store = FHIRStore(path)
    store.put_many(_observations("p1", N))
    store.put_many(_observations("p2", 500, prefix="other"))
    yield store, path
    store.close()


def _plan(path: Path, sql: str, args: list[Any]) -> list[str]:
    """SQLite's ``EXPLAIN QUERY PLAN`` of ``sql``, one detail string per step."""
    db = sqlite3.connect(path)
    try:
        return [str(row[3]) for row in db.execute("EXPLAIN QUERY PLAN " + sql, args)]
    finally:
        db.close()


def _vm_steps(path: Path, sql: str, args: list[Any]) -> tuple[int, int]:
    """SQLite virtual machine instructions run by ``sql`` (a deterministic cost), and the rows."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    db = sqlite3.connect(path)
    try:
        db.set_progress_handler(count, 1)
        rows = db.execute(sql, args).fetchall()
    finally:
        db.close()
    return steps, len(rows)


@pytest.mark.parametrize("params, patient", [({"patient": "p1"}, "p1"), ({"patient": "Patient/p1"}, None),
                                             ({"subject": "Patient/p1"}, "p1")])
def test_a_late_page_costs_what_an_early_one_does(paged_store: tuple[FHIRStore, Path], params: dict[str, str],
                                                  patient: str | None) -> None:
    store, path = paged_store
    criteria = parse_search("Observation", {k: [v] for k, v in params.items()}, BASE).criteria
    everything = store.search("Observation", criteria, patient=patient, count=N)
    assert everything.total == N and len(everything.keys) == N
    early, late = everything.keys[99], everything.keys[N - 201]
    costs = []
    for key in (early, late):
        sql, args = store.page_statement("Observation", criteria, patient=patient, count=100, after=key)
        assert _plan(path, sql, args) == [
            "SEARCH r USING INDEX resource_patient (type=? AND patient=? AND (last_updated,id)>(?,?))"]
        steps, n = _vm_steps(path, sql, args)
        assert n == 100
        costs.append(steps)
    assert costs[1] <= costs[0] * 1.2, costs
    # the same late page by OFFSET examines every row before it: the measure above would catch that
    sql, args = store.page_statement("Observation", criteria, patient=patient, count=100, offset=N - 200)
    assert _vm_steps(path, sql, args)[0] > 5 * costs[1]
    # and keyset pages give what OFFSET pages give
    by_key = store.search("Observation", criteria, patient=patient, count=100, after=late, total=N)
    by_offset = store.search("Observation", criteria, patient=patient, count=100, offset=N - 200)
    assert by_key.resources == by_offset.resources and by_key.total == by_offset.total == N
    before = store.search("Observation", criteria, patient=patient, count=100,
                          before=everything.keys[N - 100], total=N)
    assert before.keys == everything.keys[N - 200:N - 100]


def test_a_search_without_a_patient_pages_on_the_lastupdated_index(paged_store: tuple[FHIRStore, Path]
                                                                   ) -> None:
    store, path = paged_store
    criteria = parse_search("Observation", {"code": ["http://loinc.org|2339-0"]}, BASE).criteria
    sql, args = store.page_statement("Observation", criteria, count=100, after=(0.0, ""))
    plan = _plan(path, sql, args)
    assert plan[0] == "SEARCH r USING INDEX resource_updated (type=? AND (last_updated,id)>(?,?))"
    assert not any(step.startswith("SCAN") or "TEMP B-TREE" in step for step in plan)


def test_an_untyped_subject_keeps_its_reference_semantics(tmp_path: Path) -> None:
    """``subject=id`` matches any subject type with that id (a Group too); only ``patient=`` and
    ``Patient/``-typed values are answered from the compartment column."""
    store = FHIRStore(tmp_path / "fhir.sqlite")
    obs = next(_observations("g1", 1, prefix="grp"))
    obs["subject"] = {"reference": "Group/g1"}
    store.put_many([obs, *_observations("g1", 2, prefix="pat")])
    ids = {"subject": 3, "patient": 2, "subject:Patient": 2, "subject:Group": 1}
    for name, n in ids.items():
        criteria = parse_search("Observation", {name: ["g1"]}, BASE).criteria
        assert store.search("Observation", criteria).total == n, name
    store.close()
