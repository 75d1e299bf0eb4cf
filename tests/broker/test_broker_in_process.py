"""Retrieves answered in the broker's own process from our PACS's store (``broker --pacs-store``,
:mod:`servers.broker.local_pacs`).

Judged from outside: dicomweb-client gets the instances as stored; curl, many requests on one kept-alive
connection, gets every answer whole (an earlier version lost the client's next request to a stream
still open); a connection carries retrieves, searches and refusals in turn; the guard answers before
the store is touched; searches and metadata still go to the PACS over HTTP; what the PACS stores after
the broker started is served; a client gone mid-answer is audited as incomplete; the command refuses a
folder that is not a PACS's, a URL that is not our PACS's, and both ways at once; with ``--processes
2`` two worker processes answer the multi-patient load."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid

from servers.broker import command as broker_command
from servers.broker.context import BrokerContext
from servers.broker.local_pacs import LocalPACS
from servers.demo_data.dicom import instance_bytes
from servers.ehr.oauth.clients import BROKER_CLIENT_ID
from servers.pacs.app import make_app as make_pacs
from servers.pacs.seed import seed
from servers.pacs.settings import PACSSettings
from servers.runtime import ServerLoop, StartupError
from tests.broker.answered_on_connection import (
    ACCEPT_DICOM,
    PREFIX,
    Answering,
    check_a_client_gone_mid_answer_is_audited,
    check_one_connection_for_everything,
    check_retrieves_as_stored,
    check_searches_and_metadata_stay_with_the_broker,
    check_the_guard_answers_first,
    large_instance,
)
from tests.broker.conftest import SECRETS, Stack
from tests.broker.test_broker_load import run_load

ROOT = Path(__file__).resolve().parents[2]


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@dataclass
class InProcess:
    dicomweb: str  # the broker's DICOMweb base
    pacs_dicomweb: str
    ctx: BrokerContext
    large_study: str  # 40 MB, of patient 0

    @property
    def local(self) -> LocalPACS:
        assert self.ctx.local_pacs is not None
        return self.ctx.local_pacs

    def audit(self) -> list[dict[str, object]]:
        path = self.ctx.settings.data_dir / "audit.jsonl"  # type: ignore[operator]
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    @property
    def answering(self) -> Answering:
        return Answering(self.dicomweb, self.large_study, lambda: self.local.answered, self.audit)


@pytest.fixture(scope="module")
def here(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    tmp = tmp_path_factory.mktemp("in-process")
    pacs = stack.loop.serve(lambda url: make_pacs(PACSSettings(data_dir=tmp / "pacs", fsync=False), url))
    seed(pacs.app.settings["pacs"].store, stack.plan)
    large = pacs.app.settings["pacs"].store.put(large_instance(stack))
    url, ctx = stack.start_broker(pacs.url + "/dicom-web", pacs_store=tmp / "pacs", data_dir=tmp / "broker")
    yield InProcess(url + "/dicom-web", pacs.url + "/dicom-web", ctx, large.study_uid)


def test_retrieves_are_answered_in_the_brokers_process(stack: Stack, here: InProcess) -> None:
    check_retrieves_as_stored(stack, here.answering)


def test_curl_gets_every_answer_on_one_kept_alive_connection(stack: Stack, here: InProcess) -> None:
    """curl, 40 retrieves in one invocation: it sends each request as soon as the previous answer is in,
    so the next request arrives while the answer's stream is being closed."""
    patient = stack.plan.patients[0]
    plan = patient.studies[0]
    series = plan.series[0]
    url = f"{here.dicomweb}/studies/{plan.study_uid}/series/{series.series_uid}/instances/" \
          f"{series.instance_uids[0]}"
    expected = len(httpx.get(url, headers={**stack.headers(patient), "Accept": ACCEPT_DICOM}).content)
    before = here.local.answered
    cmd = ["curl", "-sS", "--max-time", "60", "-H", f"Accept: {ACCEPT_DICOM}",
           "-H", f"Authorization: Bearer {stack.token(patient)}",
           "-w", "%{http_code} %{size_download} %{num_connects}\\n"]
    for _ in range(40):
        cmd += ["-o", "/dev/null", url]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=90).stdout.split("\n")
    answers = [line.split() for line in out if line]
    assert len(answers) == 40
    assert all(code == "200" and int(size) == expected for code, size, _ in answers), answers
    assert sum(int(connects) for _, _, connects in answers) == 1  # one connection for all of them
    assert here.local.answered == before + 40


def test_one_connection_carries_retrieves_searches_and_refusals(stack: Stack, here: InProcess) -> None:
    check_one_connection_for_everything(stack, here.answering)


def test_the_guard_answers_before_the_store_is_read(stack: Stack, here: InProcess) -> None:
    check_the_guard_answers_first(stack, here.answering)


def test_searches_and_metadata_go_to_the_pacs(stack: Stack, here: InProcess) -> None:
    check_searches_and_metadata_stay_with_the_broker(stack, here.answering)


def test_what_the_pacs_stores_later_is_served(stack: Stack, here: InProcess) -> None:
    """The PACS's process writes, the broker's reads the same store: a study sent to the PACS after the
    broker started comes back through the broker byte for byte."""
    patient = stack.plan.patients[0]
    plan = patient.studies[0]
    ds = pydicom.dcmread(io.BytesIO(instance_bytes(patient, plan, plan.series[0], 0)))
    ds.StudyInstanceUID = generate_uid(PREFIX)
    ds.SeriesInstanceUID = generate_uid(PREFIX)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(PREFIX)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    DICOMwebClient(here.pacs_dicomweb).store_instances([pydicom.dcmread(io.BytesIO(out.getvalue()))])
    before = here.local.answered
    got = DICOMwebClient(here.dicomweb, headers=stack.headers(patient)).retrieve_study(ds.StudyInstanceUID)
    assert [g.SOPInstanceUID for g in got] == [ds.SOPInstanceUID]
    assert got[0].PixelData == ds.PixelData
    assert here.local.answered == before + 1


def test_a_client_gone_mid_answer_is_audited_as_incomplete(stack: Stack, here: InProcess) -> None:
    check_a_client_gone_mid_answer_is_audited(stack, here.answering)


def test_no_byte_of_another_patients_data_leaks(stack: Stack, here: InProcess) -> None:
    """The broker's concurrent multi-patient load (tests/broker/test_broker_load.py), its retrieves
    answered in the broker's process on kept-alive connections."""
    before = here.local.answered
    run_load(stack, here.dicomweb.removesuffix("/dicom-web"))
    assert here.local.answered - before >= sum(len(p.studies) for p in stack.plan.patients) * 4 * 3


def _run_command(stack: Stack, tmp_path: Path, *extra: str) -> None:
    parser = argparse.ArgumentParser()
    broker_command.add_arguments(parser)
    args = parser.parse_args(["--introspection", stack.introspection_url, "--ehr", stack.ehr_fhir,
                              "--client-secret", "x" * 32, "--data-dir", str(tmp_path / "b"), *extra])
    loop = ServerLoop().start()
    try:
        broker_command.run(args, loop)
    finally:
        loop.stop()


def test_the_command_refuses_what_is_not_our_pacs(stack: Stack, here: InProcess, tmp_path: Path) -> None:
    store = str(here.local.app.settings["pacs"].store.data_dir)
    with pytest.raises(StartupError, match="not a PACS data folder"):
        _run_command(stack, tmp_path, "--pacs", here.pacs_dicomweb, "--pacs-store", str(tmp_path))
    with pytest.raises(StartupError, match="our PACS's DICOMweb base"):
        _run_command(stack, tmp_path, "--pacs", "http://127.0.0.1:8042/wado", "--pacs-store", store)
    with pytest.raises(StartupError, match="give one"):
        _run_command(stack, tmp_path, "--pacs", here.pacs_dicomweb, "--pacs-store", store,
                     "--pacs-handoff", str(tmp_path / "h.sock"))


def test_worker_processes_answer_from_the_store(stack: Stack, here: InProcess, tmp_path: Path) -> None:
    """``s4s-servers broker --processes 2 --pacs-store``: two worker processes on one port, each a whole
    broker; the multi-patient load through them gets every answer right and leaks nothing."""
    secret = tmp_path / "secret"
    secret.write_text(SECRETS[BROKER_CLIENT_ID])
    secret.chmod(0o600)
    store = str(here.local.app.settings["pacs"].store.data_dir)
    urls_file = tmp_path / "urls.json"
    with (tmp_path / "broker.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "servers.cli", "--log-level", "WARNING", "broker", "--pacs",
             here.pacs_dicomweb, "--pacs-store", store, "--processes", "2", "--introspection",
             stack.introspection_url, "--ehr", stack.ehr_fhir, "--client-secret-file", str(secret),
             "--data-dir", str(tmp_path / "b"), "--urls-file", str(urls_file)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not urls_file.exists():
            assert proc.poll() is None, (tmp_path / "broker.log").read_text()
            assert time.monotonic() < deadline, "the broker did not write its URLs file"
            time.sleep(0.05)
        workers = children(proc.pid)
        assert len(workers) == 2
        run_load(stack, json.loads(urls_file.read_text())["broker_dicomweb"].removesuffix("/dicom-web"))
        events = [json.loads(line) for line in (tmp_path / "b" / "audit.jsonl").read_text().splitlines()]
        assert sum(e["action"] == "R" and e["outcome"] == "0" for e in events) >= \
            sum(len(p.studies) for p in stack.plan.patients) * 4 * 3
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, (tmp_path / "broker.log").read_text()
