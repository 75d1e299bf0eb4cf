"""The broker and the introspection service as roles of ``s4s-servers demo`` (start_in_demo wiring):
the demo EHR's confidential clients, the URLs file keys, and one search and retrieve through them."""

from __future__ import annotations

from pathlib import Path

import httpx

from servers.cli import build_parser
from servers.demo import DemoContext, start_stack
from servers.demo_data.plan import DemoPlan
from servers.runtime import ServerLoop
from tests.broker.launch import launch


def test_demo_stack_serves_imaging_through_broker_and_introspection(
        small_plan: DemoPlan, tmp_path: Path) -> None:
    loop = ServerLoop().start()
    try:
        urls = start_stack(DemoContext(data_dir=tmp_path, plan=small_plan), loop)
        for key in ("introspection", "broker_fhir", "broker_dicomweb", "ehr_fhir", "pacs_dicomweb"):
            assert urls[key].startswith("http://127.0.0.1:"), key
        config = httpx.get(urls["smart_configuration"]).json()
        assert any(e["url"] == urls["broker_fhir"] and "smart-imaging-access" in e["capabilities"]
                   for e in config["associated_endpoints"])
        patient = small_plan.patients[0]
        user = next(u for u in small_plan.users if u.patient_ids == (patient.id,))
        token = launch(urls["ehr_fhir"][: -len("/fhir")], user.username, user.password, patient.id)
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        r = httpx.get(f"{urls['broker_fhir']}/ImagingStudy", params={"patient": patient.id}, headers=headers)
        assert r.status_code == 200 and r.json()["total"] == len(patient.studies)
        r = httpx.get(f"{urls['broker_dicomweb']}/studies/{patient.studies[0].study_uid}/metadata",
                      headers=headers)
        assert r.status_code == 200 and len(r.json()) == patient.studies[0].number_of_instances
        assert (tmp_path / "broker" / "audit.jsonl").exists()
    finally:
        loop.stop()


def test_cli_roles_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["broker", "--pacs", "http://p/dicom-web", "--introspection", "http://i/introspect",
                              "--ehr", "http://e/fhir", "--client-secret-file", "/dev/null"])
    assert args.role == "broker" and args.client_id == "s4s-broker"
    args = parser.parse_args(["introspection", "--ehr", "http://e/fhir", "--callers", "c.json", "--mode",
                              "fhir-oracle"])
    assert args.role == "introspection" and args.mode == "fhir-oracle"
