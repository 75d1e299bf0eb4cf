"""``s4s-servers pacs --unix-socket PATH``: the PACS also listens on a Unix-domain socket (for a broker on
the same host), in one process and in several; the socket is private to its user, refused when another
server holds it, replaced when stale, and removed on stop."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient

from s4s_jupyter.core.multipart import iter_parts, parse_content_type
from servers.demo_data.dicom import iter_plan
from servers.demo_data.plan import DemoPlan
from servers.runtime import StartupError, bind_unix
from tests.pacs import test_processes as processes_test
from tests.support.handoff import hand_over

ROOT = Path(__file__).resolve().parents[2]
DICOM_PARTS = 'multipart/related; type="application/dicom"'


def parts(response: httpx.Response) -> list[bytes]:
    _, params = parse_content_type(response.headers["content-type"])
    return [body for _, body in iter_parts(response.content, params["boundary"])]


def start(tmp_path: Path, processes: int, sock: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """``s4s-servers pacs --unix-socket sock`` as users run it; the process and its URLs file."""
    running = processes_test.start(tmp_path, processes, "--unix-socket", str(sock))
    return running.proc, json.loads((tmp_path / "urls.json").read_text())


@pytest.mark.parametrize("processes", [1, 2])
def test_the_socket_serves_dicomweb_and_is_removed_on_stop(tmp_path: Path, processes: int,
                                                          small_plan: DemoPlan) -> None:
    sock = tmp_path / "pacs.sock"
    proc, urls = start(tmp_path, processes, sock)
    try:
        assert urls["pacs_socket"] == str(sock)
        assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
        blobs = [data for _, data in iter_plan(small_plan)][:4]
        DICOMwebClient(urls["pacs_dicomweb"]).store_instances([pydicom.dcmread(io.BytesIO(b)) for b in blobs])
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url=urls["pacs_dicomweb"]) as c:
            studies = c.get("/studies", headers={"Accept": "application/dicom+json"})
            assert studies.status_code == 200 and studies.json()
            study = studies.json()[0]["0020000D"]["Value"][0]
            over_socket = c.get(f"/studies/{study}", headers={"Accept": DICOM_PARTS})
        over_tcp = httpx.get(f"{urls['pacs_dicomweb']}/studies/{study}", headers={"Accept": DICOM_PARTS})
        assert over_socket.status_code == over_tcp.status_code == 200
        assert parts(over_socket) == parts(over_tcp) and len(parts(over_tcp)) == len(blobs)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not sock.exists()


def test_a_socket_in_use_is_refused_and_left_alone(tmp_path: Path) -> None:
    sock = tmp_path / "pacs.sock"
    proc, urls = start(tmp_path / "a", 1, sock)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "servers.cli", "pacs", "--data-dir", str(tmp_path / "b"), "--unix-socket",
             str(sock)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            timeout=60)
        assert second.returncode == 1
        assert b"is in use by another server" in second.stderr and b"Traceback" not in second.stderr
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock))) as c:  # the first still serves
            assert c.get(urls["pacs_dicomweb"] + "/studies").status_code == 204
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_stale_socket_is_replaced_and_other_files_are_not(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    old = socket.socket(socket.AF_UNIX)
    old.bind(str(stale))
    old.close()  # the file stays, nobody listens: what a killed server leaves
    fresh = bind_unix(str(stale))
    fresh.close()
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    with pytest.raises(StartupError, match="not a socket"):
        bind_unix(str(precious))
    assert precious.read_text() == "keep me"


@pytest.mark.parametrize("processes", [1, 2])
def test_handed_connections_are_served_by_every_worker(tmp_path: Path, processes: int,
                                                       small_plan: DemoPlan) -> None:
    handoff = tmp_path / "handoff.sock"
    running = processes_test.start(tmp_path, processes, "--handoff-socket", str(handoff))
    urls = json.loads((tmp_path / "urls.json").read_text())
    try:
        assert urls["pacs_handoff"] == str(handoff)
        assert stat.S_IMODE(handoff.stat().st_mode) == 0o600
        blobs = [data for _, data in iter_plan(small_plan)][:3]
        DICOMwebClient(urls["pacs_dicomweb"]).store_instances([pydicom.dcmread(io.BytesIO(b)) for b in blobs])
        study = pydicom.dcmread(io.BytesIO(blobs[0])).StudyInstanceUID
        path = httpx.URL(urls["pacs_dicomweb"]).path
        direct = httpx.get(f"{urls['pacs_dicomweb']}/studies/{study}", headers={"Accept": DICOM_PARTS})
        request = (f"GET {path}/studies/{study} HTTP/1.1\r\nHost: pacs\r\nAccept: {DICOM_PARTS}\r\n"
                   "Connection: close\r\n\r\n").encode()
        for _ in range(6):  # with two workers, both take some
            answer, status = hand_over(handoff, request)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in head and status == b"200"
            ctype = next(line.split(":", 1)[1] for line in head.decode().split("\r\n")
                         if line.lower().startswith("content-type:"))
            boundary = parse_content_type(ctype.strip())[1]["boundary"]
            assert [p for _, p in iter_parts(body, boundary)] == parts(direct)
        answer, status = hand_over(handoff, f"GET {path}/studies/1.2.3.4 HTTP/1.1\r\nHost: pacs\r\n"
                                            f"Accept: {DICOM_PARTS}\r\nConnection: close\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 404 ") and status == b"404"
    finally:
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=30) == 0
    assert not handoff.exists()
