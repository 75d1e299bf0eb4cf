"""FHIR into pandas against the real EHR: every Sync for Science call, paging, incremental sync, and the
flattening conventions on hand-written resources."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import s4s_jupyter as s4s
from s4s_jupyter.client import flatten
from s4s_jupyter.client.fhir import CATEGORIES, FHIRClient
from s4s_jupyter.core.errors import ClientError
from servers.runtime import ServerLoop


@pytest.fixture(scope="module")
def ehr(stack: dict[str, Any]) -> Iterator[s4s.Session]:
    care = next(u for u in stack["users"] if u["username"] == "caregiver")
    login = s4s.FormLogin(care["username"], care["password"], patient="pat-002")
    with s4s.connect(stack["ehr_fhir"], browser=login, token_store=False) as session:
        yield session


@pytest.mark.parametrize("name", sorted(CATEGORIES))
def test_every_sync_for_science_category(ehr: s4s.Session, name: str) -> None:
    frame = getattr(ehr, name)()
    cat = CATEGORIES[name]
    raw = [r for rtype in cat.resource_types
           for r in ehr.fhir.resources(rtype, patient="pat-002", **dict(cat.params))]
    assert len(raw) > 0, f"the demo EHR has no {name} for pat-002"
    assert list(frame.columns) == flatten.columns(cat.resource_types[0])
    assert set(frame["id"]) == {r["id"] for r in raw}
    assert set(frame["patient"]) == {"pat-002"}
    assert str(frame["last_updated"].dtype) == "datetime64[us, UTC]"


def test_columns_have_predictable_types(ehr: s4s.Session) -> None:
    labs = ehr.labs()
    assert labs["value"].dtype == "float64" and labs["unit"].notna().all()
    assert labs["code_system"].eq("http://loinc.org").all() and labs["code_display"].notna().all()
    assert str(labs["effective"].dtype) == "datetime64[us, UTC]"
    vitals = ehr.vitals()
    bp = vitals[vitals["panel"] == "85354-9"]
    assert len(bp) > 0 and set(bp["code"]) == {"8480-6", "8462-4"} and bp["value"].notna().all()
    smoking = ehr.smoking_status()
    assert smoking["code"].eq("72166-2").all() and smoking["value_display"].notna().all()
    person = ehr.demographics()
    assert person.loc[0, "mrn"] == "MRN100002" and str(person["birth_date"].dtype).startswith("datetime64")
    reports = ehr.radiology_reports()
    assert all(isinstance(v, list) for v in reports["imaging_studies"])


def test_radiology_reports_join_their_imaging_studies(ehr: s4s.Session) -> None:
    """The EHR names a report's study by its urn:dicom:uid identifier (a logical reference): the column
    holds the Study Instance UIDs, which join the imaging server's ImagingStudy rows."""
    reports = ehr.radiology_reports()
    raw = ehr.resources("DiagnosticReport", patient="pat-002", category="RAD")
    assert len(reports) == len(raw) > 0
    linked = [ref["identifier"] for r in raw for ref in r.get("imagingStudy", [])]
    assert linked and all(i["system"] == "urn:dicom:uid" and "reference" not in i for i in linked)
    uids = reports.explode("imaging_studies")["imaging_studies"]
    assert uids.notna().all() and set(uids) == {i["value"].removeprefix("urn:oid:") for i in linked}
    studies = ehr.imaging_studies()
    joined = reports.explode("imaging_studies").merge(studies, left_on="imaging_studies",
                                                      right_on="study_uid")
    assert len(joined) == len(uids) and set(joined["study_uid"]) <= set(studies["study_uid"])


def test_logical_references_flatten_to_their_identifier() -> None:
    uid = {"identifier": {"system": "urn:dicom:uid", "value": "urn:oid:1.2.840.99.1"}}
    assert flatten.ref_id(uid) == "1.2.840.99.1"
    assert flatten.ref_id({"identifier": {"system": "urn:dicom:uid", "value": "urn:oid:not-a-uid"}}) == \
        "urn:oid:not-a-uid"  # not a UID: kept as it is, never dropped
    assert flatten.ref_id({"identifier": {"system": "http://example.org/mrn", "value": "MRN1"}}) == "MRN1"
    assert flatten.ref_id({"reference": "ImagingStudy/s1", "identifier": uid["identifier"]}) == "s1"
    assert flatten.ref_id({"display": "no target"}) is None
    row = flatten.to_frame([{"resourceType": "DiagnosticReport", "id": "r", "imagingStudy": [uid]}],
                           "DiagnosticReport").iloc[0]
    assert row["imaging_studies"] == ["1.2.840.99.1"]


def test_paging_follows_next_links(ehr: s4s.Session) -> None:
    everything = ehr.resources("Observation", patient="pat-002")
    pages = ehr.fhir.bundle_pages("Observation", {"patient": "pat-002", "_count": 7})
    assert len(pages) == -(-len(everything) // 7) > 1
    paged = ehr.search("Observation", patient="pat-002", _count=7)
    assert set(paged["id"]) == {r["id"] for r in everything}


def test_incremental_sync_asks_only_for_changes(ehr: s4s.Session, tmp_path: Path) -> None:
    sent: list[str] = []
    ehr.fhir.http.event_hooks["request"].append(lambda request: sent.append(str(request.url)))
    try:
        state = tmp_path / "sync.json"
        first = ehr.sync(["labs", "conditions"], state_file=state)
        assert len(first["labs"]) == len(ehr.labs()) and len(first["conditions"]) > 0
        assert not any("_lastUpdated" in url for url in sent)
        sent.clear()
        second = ehr.sync(["labs", "conditions"])
        assert len(second["labs"]) == 0 and len(second["conditions"]) == 0
        assert list(second["labs"].columns) == list(first["labs"].columns)
        assert sent and all("_lastUpdated=gt" in url for url in sent)
        # the instants survive the session (state file)
        third = s4s.Session(ehr.fhir_base, token_store=None)
        third.tokens.set(ehr.tokens.tokens)
        with third:
            assert all(len(f) == 0 for f in third.sync(["labs"], state_file=state).values())
    finally:
        ehr.fhir.http.event_hooks["request"].clear()


def test_errors_come_back_as_client_errors(ehr: s4s.Session) -> None:
    with pytest.raises(ClientError) as info:
        ehr.search("Observation", patient="pat-002", date="not-a-date")
    assert info.value.status == 400 and info.value.body["resourceType"] == "OperationOutcome"
    with pytest.raises(ClientError) as info:
        ehr.conditions(patient="pat-003")  # the token is for pat-002 only
    assert info.value.status in (403, 404)


def test_a_next_link_to_another_origin_is_not_followed(server_loop: ServerLoop) -> None:
    import tornado.web

    class Evil(tornado.web.RequestHandler):
        def get(self) -> None:
            self.finish({"resourceType": "Bundle", "type": "searchset", "entry": [],
                         "link": [{"relation": "next", "url": "http://attacker.invalid/fhir/Condition?p=2"}]})

    served = server_loop.serve(lambda url: tornado.web.Application([(r"/fhir/Condition", Evil)]))
    with httpx.Client() as http, pytest.raises(ClientError, match="another origin"):
        FHIRClient(http, f"{served.url}/fhir").resources("Condition")


def test_flattening_conventions() -> None:
    bp = {"resourceType": "Observation", "id": "bp1", "subject": {"reference": "Patient/p1/_history/2"},
          "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}],
                                      "text": "Blood pressure"},
          "effectivePeriod": {"start": "2021-03-04T10:00:00+02:00"},
          "component": [
              {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
               "valueQuantity": {"value": 120, "unit": "mmHg"}},
              {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
               "valueQuantity": {"value": 80, "code": "mm[Hg]"}}]}
    frame = flatten.to_frame([bp])
    assert list(frame["code"]) == ["8480-6", "8462-4"] and list(frame["panel"]) == ["85354-9"] * 2
    assert list(frame["value"]) == [120.0, 80.0] and list(frame["unit"]) == ["mmHg", "mm[Hg]"]
    assert set(frame["patient"]) == {"p1"}
    assert frame["effective"].iloc[0] == pd.Timestamp("2021-03-04T08:00:00Z")
    cond = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"text": "Headache"}, "onsetDateTime": "2019-05"}
    row = flatten.to_frame([cond]).iloc[0]
    assert row["code"] is None and row["code_display"] == "Headache"
    assert row["onset"] == pd.Timestamp("2019-05-01T00:00:00Z")
    empty = flatten.to_frame([], "Immunization")
    assert list(empty.columns) == flatten.columns("Immunization") and empty.empty
    assert flatten.ref_id({"reference": "https://x/fhir/Patient/abc"}) == "abc"


def test_a_busy_fhir_server_is_asked_again_after_retry_after(ehr: s4s.Session, server_loop: ServerLoop,
                                                              stack: dict[str, Any]) -> None:
    """503 and 429 with Retry-After in front of the real EHR (a proxy answering for it while busy)."""
    import time

    from s4s_jupyter.client.retry import RetryPolicy
    from tests.client.proxy import ProxyState, make_proxy

    def through(state: ProxyState, policy: RetryPolicy) -> FHIRClient:
        served = server_loop.serve(lambda url: make_proxy(state, "fhir"))
        return FHIRClient(ehr.fhir.http, f"{served.url}/fhir", policy)  # the session's token rides along

    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    busy = ProxyState(stack["ehr_fhir"], fail_first=2, retry_after="1", fail_pattern=r"^/Condition$",
                      forward_auth=True)
    frame = through(busy, RetryPolicy(sleep=sleep)).search("Condition", patient="pat-002", _count=1000)
    assert busy.failed == 2 and slept == [1.0, 1.0]
    assert set(frame["id"]) == set(ehr.conditions()["id"]) and len(frame) > 0

    # 429 with an HTTP-date already past: asked again at once
    slept.clear()
    limited = ProxyState(stack["ehr_fhir"], fail_first=1, fail_status=429, fail_pattern=r"^/Condition$",
                         retry_after="Wed, 21 Oct 2015 07:28:00 GMT", forward_auth=True)
    assert len(through(limited, RetryPolicy(sleep=sleep)).search("Condition", patient="pat-002")) > 0
    assert limited.failed == 1 and slept == [0.0]

    # still busy after every attempt: a clear error with the server's status; a 400 is not retried
    slept.clear()
    stuck = ProxyState(stack["ehr_fhir"], fail_first=1000, retry_after="0", fail_pattern=r"^/Condition$",
                       forward_auth=True)
    client = through(stuck, RetryPolicy(max_attempts=3, sleep=sleep))
    with pytest.raises(ClientError) as info:
        client.search("Condition", patient="pat-002")
    assert info.value.status == 503 and "after 3 attempts" in info.value.message and stuck.failed == 3
    with pytest.raises(ClientError) as info:
        client.search("Observation", patient="pat-002", date="not-a-date")
    assert info.value.status == 400 and len([p for p, _ in stuck.seen if p == "Observation"]) == 1


def test_an_unreachable_fhir_server_is_tried_with_back_off_then_reported() -> None:
    import socket

    from s4s_jupyter.client.retry import RetryPolicy

    with socket.socket() as s:  # a port nobody listens on any more
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept: list[float] = []
    with httpx.Client() as http:
        client = FHIRClient(http, f"http://127.0.0.1:{port}/fhir",
                            RetryPolicy(max_attempts=3, sleep=slept.append))
        with pytest.raises(ClientError) as info:
            client.search("Condition", patient="pat-002")
    assert info.value.status == 502 and "after 3 attempts" in info.value.message and slept == [0.5, 1.0]
