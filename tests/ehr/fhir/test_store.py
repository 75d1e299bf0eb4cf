"""The SQLite resource store and the search semantics of R4 3.1.1, without HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from s4s_jupyter.core.errors import FHIRError
from servers.demo_data.clinical import clinical_resources
from servers.demo_data.plan import DemoPlan
from servers.ehr.fhir.instants import InvalidInstant, parse_range
from servers.ehr.fhir.query import TokenValue, parse_search, parse_token, split_escaped
from servers.ehr.fhir.store import FHIRStore, StoreError

BASE = "http://ehr.test/fhir"


def _obs(rid: str, patient: str, when: str | dict[str, str], updated: str, code: str = "4548-4",
         category: str = "laboratory") -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Observation", "id": rid, "meta": {"lastUpdated": updated}, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
    }
    out["effectivePeriod" if isinstance(when, dict) else "effectiveDateTime"] = when
    return out


@pytest.fixture
def store(tmp_path: Path) -> FHIRStore:
    s = FHIRStore(tmp_path / "fhir.sqlite")
    s.put_many([
        _obs("o1", "p1", "2024-01-15T10:00:00Z", "2024-01-16T00:00:00Z"),
        _obs("o2", "p1", "2024-02-01", "2024-02-02T00:00:00Z"),
        _obs("o3", "p1", {"start": "2024-03-01T00:00:00Z", "end": "2024-03-05T00:00:00Z"},
             "2024-03-06T00:00:00Z", code="8867-4", category="vital-signs"),
        _obs("o4", "p1", "2025-06-01T08:30:00+02:00", "2025-06-02T00:00:00Z", code="72166-2",
             category="social-history"),
        _obs("o5", "p2", "2024-01-15T10:00:00Z", "2024-01-16T00:00:00Z"),
    ])
    return s


def _ids(store: FHIRStore, args: dict[str, list[str]], patient: str | None = "p1") -> list[str]:
    q = parse_search("Observation", args, BASE)
    return [r["id"] for r in store.search("Observation", q.criteria, patient=patient, count=100).resources]


@pytest.mark.parametrize(("date", "expected"), [
    ("2024-01-15", ["o1"]),
    ("eq2024-01", ["o1"]),
    ("eq2024", ["o1", "o2", "o3"]),
    ("gt2024-01-15", ["o2", "o3", "o4"]),
    ("ge2024-01-15", ["o1", "o2", "o3", "o4"]),
    ("lt2024-02-01", ["o1"]),
    ("le2024-02-01", ["o1", "o2"]),
    ("ne2024-02-01", ["o1", "o3", "o4"]),
    ("gt2024-03-02", ["o3", "o4"]),  # the period ends after the day
    ("lt2024-03-02", ["o1", "o2", "o3"]),  # ... and starts before it
    ("eq2024-03-02", []),  # the period is not contained in that day
    ("ge2025-06-01T06:30:00Z", ["o4"]),  # 08:30+02:00 is 06:30Z
    ("gt2025-06-01T06:30:00Z", []),
    ("lt2025-06-01T06:30:01Z", ["o1", "o2", "o3", "o4"]),
    ("ge2025-06-01T08:30:00+02:00", ["o4"]),
    ("ge2025-06-01T08:30:00 02:00", ["o4"]),  # an unencoded '+' decoded as a space
    ("ge2025-06-01T08:30:00-02:00", []),
])
def test_date_prefixes_compare_ranges_at_the_values_precision(store: FHIRStore, date: str,
                                                              expected: list[str]) -> None:
    assert _ids(store, {"date": [date]}) == expected


def test_date_and_repeats_and_or(store: FHIRStore) -> None:
    assert _ids(store, {"date": ["ge2024-01-01", "lt2024-02-01"]}) == ["o1"]  # AND
    assert _ids(store, {"date": ["2024-01-15,2024-02-01"]}) == ["o1", "o2"]  # OR


@pytest.mark.parametrize(("code", "expected"), [
    ("4548-4", ["o1", "o2"]),
    ("http://loinc.org|4548-4", ["o1", "o2"]),
    ("http://loinc.org|", ["o1", "o2", "o3", "o4"]),
    ("|4548-4", []),  # only codes without a system
    ("http://snomed.info/sct|4548-4", []),
    ("8867-4,72166-2", ["o3", "o4"]),
])
def test_token_forms(store: FHIRStore, code: str, expected: list[str]) -> None:
    assert _ids(store, {"code": [code]}) == expected


def test_category_last_updated_id_and_compartment(store: FHIRStore) -> None:
    assert _ids(store, {"category": ["vital-signs"]}) == ["o3"]
    assert _ids(store, {"_lastUpdated": ["gt2024-02-02T00:00:00Z"]}) == ["o3", "o4"]
    assert _ids(store, {"_lastUpdated": ["ge2024-02-02T00:00:00Z"]}) == ["o2", "o3", "o4"]
    assert _ids(store, {"_id": ["o1,o5"]}) == ["o1"]  # o5 is another patient's
    assert _ids(store, {"_id": ["o5"]}, patient=None) == ["o5"]
    assert store.read("Observation", "o5", patient="p1") is None
    assert store.read("Observation", "o5", patient="p2") is not None


def test_restriction_alternatives_filter_in_sql(store: FHIRStore) -> None:
    labs = parse_search("Observation", {"category": ["laboratory"]}, BASE).criteria
    vitals = parse_search("Observation", {"category": ["vital-signs"]}, BASE).criteria
    q = parse_search("Observation", {}, BASE)
    only_labs = store.search("Observation", q.criteria, patient="p1", alternatives=[labs])
    assert [r["id"] for r in only_labs.resources] == ["o1", "o2"]
    both = store.search("Observation", q.criteria, patient="p1", alternatives=[labs, vitals])
    assert [r["id"] for r in both.resources] == ["o1", "o2", "o3"]
    assert store.search("Observation", q.criteria, patient="p1", alternatives=[]).total == 0


def test_paging_is_stable_and_complete(store: FHIRStore) -> None:
    seen = []
    for offset in range(0, 5, 2):
        page = store.search("Observation", (), count=2, offset=offset)
        assert page.total == 5
        seen += [r["id"] for r in page.resources]
    assert sorted(seen) == ["o1", "o2", "o3", "o4", "o5"] and len(seen) == 5


def test_put_replaces_the_index_of_a_resource(store: FHIRStore) -> None:
    store.put(_obs("o1", "p1", "2030-01-01", "2024-01-16T00:00:00Z"))
    assert "o1" not in _ids(store, {"date": ["2024-01-15"]})
    assert _ids(store, {"date": ["2030"]}) == ["o1"]


def test_bad_resources_are_refused_and_nothing_is_stored(store: FHIRStore) -> None:
    before = store.count()
    with pytest.raises(StoreError):
        store.put_many([_obs("o9", "p1", "2024-01-01", "2024-01-01T00:00:00Z"),
                        {"resourceType": "Observation", "id": "o10"}])  # no lastUpdated
    with pytest.raises(StoreError):
        store.put({"resourceType": "Basic", "id": "x", "meta": {"lastUpdated": "2024-01-01T00:00:00Z"}})
    assert store.count() == before  # the whole batch was rolled back


def test_load_demo_once_and_keeps_data_on_disk(tmp_path: Path, small_plan: DemoPlan) -> None:
    path = tmp_path / "ehr" / "fhir.sqlite"
    s = FHIRStore(path)
    assert s.load_demo(small_plan) is True
    n = s.count()
    assert n == len(clinical_resources(small_plan))
    assert s.load_demo(small_plan) is False
    s.close()
    reopened = FHIRStore(path)
    assert reopened.load_demo(small_plan) is False and reopened.count() == n
    reopened.close()


@pytest.mark.parametrize("bad", ["2024-13", "2024-02-30", "24-01-01", "2024-01-01T25:00:00Z", "2024-01-01T10",
                                 "2024/01/01", "2024-01-01T10:00:00+15:00", ""])
def test_malformed_dates_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInstant):
        parse_range(bad)
    with pytest.raises(FHIRError):
        parse_search("Observation", {"date": [f"ge{bad}" if bad else "ge"]}, BASE)


def test_ranges_by_precision() -> None:
    r = parse_range("2024-02")
    assert r.end - r.start == 29 * 86400
    assert parse_range("2024-12").end == parse_range("2025").start
    r = parse_range("2024-01-01T00:00:00.5Z")
    assert r.end - r.start == pytest.approx(0.1)


def test_token_escapes_and_errors() -> None:
    assert split_escaped(r"a\|b|c", "|") == ["a|b", "c"]
    assert parse_token(r"http://x|a\,b") == TokenValue("http://x", "a,b")
    for bad in ("a|b|c", "|"):
        with pytest.raises(FHIRError):
            parse_token(bad)
    with pytest.raises(FHIRError):
        parse_search("Observation", {"code:text": ["x"]}, BASE)  # unsupported modifier
    with pytest.raises(FHIRError):
        parse_search("Observation", {"date": ["sa2024"]}, BASE)  # unsupported prefix
    with pytest.raises(FHIRError):
        parse_search("Observation", {"_count": ["-1"]}, BASE)
    q = parse_search("Observation", {"patient.name": ["x"], "_sort": ["date"]}, BASE)
    assert q.unknown == ("patient.name", "_sort") and q.criteria == ()
