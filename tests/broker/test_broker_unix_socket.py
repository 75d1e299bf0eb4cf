"""The broker reaching the PACS over a Unix-domain socket (``--pacs-socket``, for a PACS on the same host
listening with ``--unix-socket``): the same searches, guarded retrieves and URL rewriting as over TCP.

The PACS here listens on the socket only, under a host name that does not resolve: any request the broker
sent over TCP would fail, so every answer below came through the socket."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dicomweb_client import DICOMwebClient
from requests import HTTPError

from servers.broker import command
from servers.pacs.app import make_app as make_pacs
from servers.pacs.seed import seed
from servers.pacs.settings import PACSSettings
from servers.runtime import Reservation, ServerLoop, StartupError, bind_unix
from tests.broker.conftest import Stack, assert_study_as_stored

#: the PACS's own base URL: a name that never resolves, so only the socket can reach it
PACS_BASE = "http://pacs.invalid:8042"


@pytest.fixture(scope="module")
def socket_broker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("uds")
    path = str(tmp / "pacs.sock")
    reservation = Reservation("pacs.invalid", 8042, [bind_unix(path)])
    pacs = stack.loop.serve(lambda url: make_pacs(PACSSettings(data_dir=tmp / "pacs", fsync=False), url),
                            reservation)
    assert pacs.url == PACS_BASE
    seed(pacs.app.settings["pacs"].store, stack.plan)
    url, _ = stack.start_broker(PACS_BASE + "/dicom-web", pacs_socket=path)
    yield url + "/dicom-web"


def test_search_retrieve_and_metadata_through_the_socket(stack: Stack, socket_broker: str) -> None:
    patient = stack.plan.patients[0]
    dw = DICOMwebClient(socket_broker, headers={"Authorization": f"Bearer {stack.token(patient)}"})
    found = dw.search_for_studies()
    assert {s["0020000D"]["Value"][0] for s in found} == {s.study_uid for s in patient.studies}
    assert "pacs.invalid" not in json.dumps(found)
    plan = patient.studies[0]
    assert_study_as_stored(dw.retrieve_study(plan.study_uid), patient, plan)  # the spliced path
    series = plan.series[0]
    metadata = dw.retrieve_series_metadata(plan.study_uid, series.series_uid)
    uris = [m[tag]["BulkDataURI"] for m in metadata for tag in m if "BulkDataURI" in m[tag]]
    assert uris and all(u.startswith(socket_broker + "/studies/") for u in uris)
    assert "pacs.invalid" not in json.dumps(metadata)


def test_the_guard_is_the_same_over_the_socket(stack: Stack, socket_broker: str) -> None:
    patient, other = stack.plan.patients[0], stack.plan.patients[1]
    dw = DICOMwebClient(socket_broker, headers={"Authorization": f"Bearer {stack.token(patient)}"})
    with pytest.raises(HTTPError) as caught:
        dw.retrieve_study(other.studies[0].study_uid)
    assert caught.value.response.status_code == 404
    assert httpx.get(f"{socket_broker}/studies/{patient.studies[0].study_uid}").status_code == 401


def test_a_missing_socket_is_a_502_not_a_fallback_to_tcp(stack: Stack, tmp_path: Path) -> None:
    url, _ = stack.start_broker(PACS_BASE + "/dicom-web", pacs_socket=str(tmp_path / "absent.sock"))
    patient = stack.plan.patients[0]
    r = httpx.get(f"{url}/dicom-web/studies/{patient.studies[0].study_uid}",
                  headers={**stack.headers(patient), "Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 502, r.text


def test_the_socket_carries_plain_http_only(server_loop: ServerLoop, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args([
        "--pacs", "https://pacs.example/dicom-web", "--pacs-socket", str(tmp_path / "pacs.sock"),
        "--introspection", "http://127.0.0.1:9/introspect", "--ehr", "http://127.0.0.1:9/fhir",
        "--client-secret", "s" * 32, "--data-dir", str(tmp_path / "broker")])
    with pytest.raises(StartupError, match="plain HTTP"):
        command.run(args, server_loop)
