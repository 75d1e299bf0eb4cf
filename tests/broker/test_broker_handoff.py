"""Connection handoff (:mod:`servers.handoff`): the broker authorizes a retrieve, then the PACS answers it
on the client's own connection (``broker --pacs-handoff``, ``pacs --handoff-socket``).

Judged from outside: dicomweb-client and httpx get the same bytes as from the PACS; the guard answers
before anything is handed; searches and metadata (which the broker rewrites) are never handed; the
request the PACS receives does not carry the user's token (checked with a bare Unix socket in the test
as the receiving side); a missing PACS is a 502; the PACS refuses malformed
handoffs and keeps serving; the audit trail records what the PACS reported, a client gone mid-answer
included."""

from __future__ import annotations

import argparse
import array
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from dicomweb_client import DICOMwebClient

from servers.broker.context import BrokerContext
from servers.handoff import HandoffListener, bind_handoff
from servers.pacs import command as pacs_command
from servers.pacs.app import make_app as make_pacs
from servers.pacs.seed import seed
from servers.pacs.settings import PACSSettings
from servers.runtime import ServerLoop, StartupError
from tests.broker.answered_on_connection import (
    ACCEPT_DICOM,
    Answering,
    check_a_client_gone_mid_answer_is_audited,
    check_one_connection_for_everything,
    check_retrieves_as_stored,
    check_searches_and_metadata_stay_with_the_broker,
    check_the_guard_answers_first,
    large_instance,
    read_answer,
)
from tests.broker.conftest import Stack
from tests.broker.test_broker_load import run_load
from tests.support.handoff import hand_over


@dataclass
class Handed:
    dicomweb: str  # the broker's DICOMweb base
    ctx: BrokerContext
    listener: HandoffListener
    large_study: str  # 40 MB, of patient 0: more than loopback's socket buffers hold

    def audit(self) -> list[dict[str, object]]:
        path = self.ctx.settings.data_dir / "audit.jsonl"  # type: ignore[operator]
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    @property
    def answering(self) -> Answering:
        return Answering(self.dicomweb, self.large_study, lambda: self.listener.handed, self.audit)


@pytest.fixture(scope="module")
def handed(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Handed]:
    tmp = tmp_path_factory.mktemp("handoff")
    pacs = stack.loop.serve(lambda url: make_pacs(PACSSettings(data_dir=tmp / "pacs", fsync=False), url))
    seed(pacs.app.settings["pacs"].store, stack.plan)
    large = pacs.app.settings["pacs"].store.put(large_instance(stack))
    listener = HandoffListener(bind_handoff(str(tmp / "handoff.sock")), pacs.server)
    stack.loop.call(listener.start)
    url, ctx = stack.start_broker(pacs.url + "/dicom-web", pacs_handoff=str(tmp / "handoff.sock"),
                                  data_dir=tmp / "broker")
    yield Handed(url + "/dicom-web", ctx, listener, large.study_uid)
    stack.loop.call(listener.stop)


def test_retrieves_are_answered_by_the_pacs_on_the_clients_connection(stack: Stack, handed: Handed) -> None:
    check_retrieves_as_stored(stack, handed.answering)


def test_no_byte_of_another_patients_data_leaks_through_handoffs(stack: Stack, handed: Handed) -> None:
    """The broker's concurrent multi-patient load (tests/broker/test_broker_load.py), its retrieves
    handed to the PACS on kept-alive connections that come back between requests."""
    before = handed.listener.handed
    run_load(stack, handed.dicomweb.removesuffix("/dicom-web"))
    assert handed.listener.handed - before >= sum(len(p.studies) for p in stack.plan.patients) * 4 * 3


def test_the_connection_comes_back_for_the_next_request(stack: Stack, handed: Handed) -> None:
    """One client connection, several requests: each retrieve is handed to the PACS and the connection
    comes back to the broker, which authorizes the next one (a search, another patient's study); the
    retrieves of one client connection go to the PACS over one control connection (one worker)."""
    sessions = handed.listener.sessions
    check_one_connection_for_everything(stack, handed.answering)
    # one for dicomweb-client's retrieve that sizes the answers, one for the connection's four retrieves
    assert handed.listener.sessions == sessions + 2


def test_a_session_whose_pacs_worker_is_gone_is_replaced(stack: Stack, handed: Handed) -> None:
    patient = stack.plan.patients[0]
    plan = patient.studies[0]
    token = stack.token(patient)
    url = httpx.URL(handed.dicomweb)
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        pending = bytearray()

        def ask() -> bytes:
            sock.sendall(f"GET {url.path}/studies/{plan.study_uid} HTTP/1.1\r\nHost: {url.host}\r\n"
                         f"Accept: {ACCEPT_DICOM}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
            return read_answer(sock, pending)[0]

        audited = len(handed.audit())
        assert ask().startswith(b"HTTP/1.1 200 ")
        deadline = time.monotonic() + 10
        while len(handed.audit()) == audited and time.monotonic() < deadline:
            time.sleep(0.02)  # audited: the PACS gave the connection back, the broker holds it again
        sessions = handed.listener.sessions
        # the PACS's side of every session ends, as when its worker process restarts
        tasks = stack.loop.call(lambda: list(handed.listener._tasks))
        stack.loop.call(lambda: [task.cancel() for task in tasks])
        deadline = time.monotonic() + 10
        while not all(task.done() for task in tasks) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert all(task.done() for task in tasks)
        assert ask().startswith(b"HTTP/1.1 200 ")  # same client connection, a new session
        assert handed.listener.sessions == sessions + 1


def test_a_client_asking_to_close_gets_its_connection_closed(stack: Stack, handed: Handed) -> None:
    patient = stack.plan.patients[0]
    r = httpx.get(f"{handed.dicomweb}/studies/{patient.studies[0].study_uid}",
                  headers={**stack.headers(patient), "Accept": ACCEPT_DICOM, "Connection": "close"})
    assert r.status_code == 200 and r.headers["connection"] == "close"
    assert int(r.headers["content-length"]) == len(r.content)


def test_searches_and_metadata_stay_with_the_broker(stack: Stack, handed: Handed) -> None:
    check_searches_and_metadata_stay_with_the_broker(stack, handed.answering)


def test_the_guard_answers_before_anything_is_handed(stack: Stack, handed: Handed) -> None:
    check_the_guard_answers_first(stack, handed.answering)


def test_a_client_gone_mid_answer_is_audited_as_incomplete(stack: Stack, handed: Handed) -> None:
    check_a_client_gone_mid_answer_is_audited(stack, handed.answering)


def test_a_missing_handoff_socket_is_a_502(stack: Stack, tmp_path: Path) -> None:
    url, _ = stack.start_broker(stack.pacs_dicomweb, pacs_handoff=str(tmp_path / "absent.sock"))
    patient = stack.plan.patients[0]
    r = httpx.get(f"{url}/dicom-web/studies/{patient.studies[0].study_uid}",
                  headers={**stack.headers(patient), "Accept": ACCEPT_DICOM})
    assert r.status_code == 502, r.text
    assert "PACS" in r.text


def _receive_one(path: str, got: dict[str, object]) -> threading.Thread:
    """The receiving side of a handoff, by hand: takes the message, answers on the socket, reports 200."""
    server = bind_handoff(path)
    server.setblocking(True)

    def run() -> None:
        with server:
            control, _ = server.accept()
            with control:
                head, ancillary, _, _ = control.recvmsg(65536, socket.CMSG_SPACE(4))
                fds = array.array("i")
                for _, _, data in ancillary:
                    fds.frombytes(data)
                got["head"] = head
                with socket.socket(fileno=fds[0]) as client:
                    client.setblocking(True)
                    client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                   b"Content-Length: 7\r\nConnection: close\r\n\r\nhanded!")
                control.send(b"200")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_request_handed_over_carries_no_user_token(stack: Stack, tmp_path: Path) -> None:
    got: dict[str, object] = {}
    thread = _receive_one(str(tmp_path / "h.sock"), got)
    url, _ = stack.start_broker(stack.pacs_dicomweb, pacs_handoff=str(tmp_path / "h.sock"))
    patient = stack.plan.patients[0]
    token = stack.token(patient)
    study = patient.studies[0].study_uid
    r = httpx.get(f"{url}/dicom-web/studies/{study}/rendered?quality=90",
                  headers={"Accept": "image/png", "Authorization": f"Bearer {token}"})
    thread.join(10)
    assert r.status_code == 200 and r.content == b"handed!"
    head = bytes(got["head"])  # type: ignore[arg-type]
    start, *lines = head.decode("latin-1").split("\r\n")
    assert start == f"GET /dicom-web/studies/{study}/rendered?quality=90 HTTP/1.1"
    assert token.encode() not in head and b"access_token" not in head and b"authorization" not in head.lower()
    assert "Accept: image/png" in lines and not any(line.lower().startswith("connection") for line in lines)


def test_the_pacs_refuses_malformed_handoffs_and_keeps_serving(stack: Stack, handed: Handed,
                                                                tmp_path: Path) -> None:
    path = handed.ctx.settings.pacs_handoff
    assert path is not None
    before = handed.listener.handed
    # no socket attached
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as control:
        control.connect(path)
        control.send(b"GET /dicom-web/studies HTTP/1.1\r\nHost: x\r\n\r\n")
        control.settimeout(10)
        assert control.recv(16) == b""  # closed, nothing served
    # a pipe instead of a connection
    r, w = os.pipe()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as control:
            control.connect(path)
            control.sendmsg([b"GET /dicom-web/studies HTTP/1.1\r\nHost: x\r\n\r\n"],
                           [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
            control.settimeout(10)
            assert control.recv(16) == b""
    finally:
        os.close(r)
        os.close(w)
    assert handed.listener.handed == before
    patient = stack.plan.patients[0]
    dw = DICOMwebClient(handed.dicomweb, headers=stack.headers(patient))
    assert dw.retrieve_study(patient.studies[0].study_uid)
    assert handed.listener.handed == before + 1


def test_the_pacs_command_takes_handoffs_on_a_private_socket(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    pacs_command.add_arguments(parser)
    path = tmp_path / "handoff.sock"
    args = parser.parse_args(["--data-dir", str(tmp_path / "pacs"), "--handoff-socket", str(path)])
    loop = ServerLoop().start()
    try:
        urls = pacs_command.run(args, loop)
        assert urls["pacs_handoff"] == str(path.resolve())
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
        with pytest.raises(StartupError, match="in use"):
            bind_handoff(str(path))
        # an empty PACS, handed a search: the answer comes on the connection handed over
        answer, status = hand_over(
            path, b"GET /dicom-web/studies HTTP/1.1\r\nHost: pacs\r\nConnection: close\r\n\r\n", timeout=10)
        assert answer.startswith(b"HTTP/1.1 204 ") and b"Connection: close" in answer
        assert status == b"204"
    finally:
        loop.stop()
    assert not path.exists()
