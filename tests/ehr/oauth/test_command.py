"""``s4s-servers ehr`` and the EHR's place in the demo stack, including the demo-only --auto-approve."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from servers.demo import DemoContext
from servers.demo_data.plan import DemoPlan
from servers.ehr import command
from servers.runtime import ServerLoop, reserve
from tests.ehr.conftest import RunningEHR

from .browserless import callback_params, launch_params
from .helpers import authorize_raw, exchange, get_code


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_run_alone_with_a_clients_file(server_loop: ServerLoop, tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps({"clients": [
        {"client_id": "mine", "redirect_uris": ["http://127.0.0.1/cb"],
         "scope": "launch/patient patient/*.rs"},
        {"client_id": "svc", "client_secret": "svc-secret", "grant_types": ["client_credentials"],
         "scope": "system/*.rs"}]}))
    args = parse("--data-dir", str(tmp_path / "data"), "--clients", str(clients), "--patients", "2",
                 "--associated-endpoint", "http://127.0.0.1:9/fhir/")
    urls = command.run(args, server_loop)
    assert set(urls) == {"ehr_fhir", "smart_configuration", "clients", "users"}
    config = httpx.get(urls["smart_configuration"]).json()
    assert config["associated_endpoints"] == [{"url": "http://127.0.0.1:9/fhir",
                                               "capabilities": ["smart-imaging-access"]}]
    assert [c["client_id"] for c in urls["clients"]] == ["mine", "svc"]
    assert urls["clients"][1]["client_secret"] == "svc-secret"
    assert urls["clients"][1]["type"] == "confidential"
    caregiver = urls["users"][0]
    assert caregiver["username"] == "caregiver" and len(caregiver["patients"]) == 2
    assert all(p["mrn"].startswith("MRN") for p in caregiver["patients"])
    token = httpx.post(config["token_endpoint"], auth=("svc", "svc-secret"),
                       data={"grant_type": "client_credentials", "scope": "system/*.rs"})
    assert token.status_code == 200
    assert not (tmp_path / "data" / "ehr" / "clients.json").exists()  # the given file is used, none made


def test_start_in_demo_names_the_broker_and_writes_the_demo_clients(server_loop: ServerLoop, tmp_path: Path,
                                                                    small_plan: DemoPlan) -> None:
    ctx = DemoContext(data_dir=tmp_path, plan=small_plan)
    ctx.reservations["ehr"] = reserve()
    ctx.reservations["broker"] = reserve()
    urls = command.start_in_demo(ctx, server_loop)
    assert urls["ehr_fhir"] == ctx.url("ehr") + "/fhir"
    config = httpx.get(urls["smart_configuration"]).json()
    assert config["associated_endpoints"] == [{"url": ctx.url("broker") + "/fhir",
                                               "capabilities": ["smart-imaging-access"]}]
    ids = {c["client_id"]: c for c in urls["clients"]}
    assert ids["s4s-jupyter"]["type"] == "public" and "client_secret" not in ids["s4s-jupyter"]
    assert ids["s4s-broker"]["client_secret"] and ids["s4s-introspection"]["client_secret"]
    on_disk = json.loads((tmp_path / "ehr" / "clients.json").read_text())["clients"]
    assert {c["client_id"]: c.get("client_secret") for c in on_disk}["s4s-broker"] == \
        ids["s4s-broker"]["client_secret"]
    for socket in ctx.reservations["broker"].sockets:
        socket.close()


def test_auto_approve_is_off_by_default(ehr: RunningEHR) -> None:
    assert ehr.settings.auto_approve is False
    params, _ = launch_params(ehr.url)
    assert authorize_raw(ehr, params).headers["location"] == "/auth/login"


def test_auto_approve_skips_the_pages_for_loopback_redirects_only(start_ehr: Callable[..., RunningEHR],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="s4s.ehr"):
        ehr = start_ehr(auto_approve=True)
    assert any("auto-approve" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    first_user = ehr.plan.users[0]

    params, verifier = launch_params(ehr.url)
    r = authorize_raw(ehr, params)
    assert r.status_code == 302 and r.headers["location"].startswith(params["redirect_uri"] + "?")
    got = callback_params(r.headers["location"])
    assert got["state"] == params["state"]
    body = exchange(ehr, got["code"], verifier, params).json()
    assert body["patient"] == first_user.patient_ids[0]

    # a patient hint picks the first user who may act for that patient
    last = ehr.plan.patients[-1].id
    params, verifier = launch_params(ehr.url, patient=last)
    got = callback_params(authorize_raw(ehr, params).headers["location"])
    assert exchange(ehr, got["code"], verifier, params).json()["patient"] == last

    # the same validation still applies (no PKCE -> error), and non-loopback redirects see the pages
    params, _ = launch_params(ehr.url, code_challenge=None)
    assert callback_params(authorize_raw(ehr, params).headers["location"])["error"] == "invalid_request"
    params, _ = launch_params(ehr.url, client_id="web-app", redirect_uri="https://app.example.org/callback")
    assert authorize_raw(ehr, params).headers["location"] == "/auth/login"


def test_the_database_holds_no_secret_in_clear(start_ehr: Callable[..., RunningEHR]) -> None:
    ehr = start_ehr()
    code, verifier, params = get_code(ehr)
    issued = exchange(ehr, code, verifier, params).json()
    db_path = ehr.settings.oauth_db_path
    with sqlite3.connect(db_path) as db:
        dump = "\n".join(db.iterdump())
    for wal in (db_path, Path(str(db_path) + "-wal")):
        if wal.exists():
            dump += wal.read_bytes().decode("latin-1")
    for secret in (code, issued["access_token"], issued["refresh_token"], issued["id_token"].split(".")[1]):
        assert secret not in dump
    for user in ehr.plan.users:
        assert user.password not in dump
