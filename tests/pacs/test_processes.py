"""``s4s-servers pacs --processes N``: worker processes sharing one port and one store, as users run it
(a subprocess, its URLs file, signals), judged by dicomweb-client and by what is stored afterwards."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient

from s4s_jupyter.core.multipart import encode_parts
from servers.pacs.store import Store, StoreInUse
from tests.pacs.test_store import check_consistent

ROOT = Path(__file__).resolve().parents[2]
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary={}'


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(pid) for pid in children]


def start(tmp_path: Path, processes: int, *extra: str) -> Running:
    tmp_path.mkdir(parents=True, exist_ok=True)
    urls_file = tmp_path / "urls.json"
    log = tmp_path / "pacs.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "servers.cli", "--log-level", "WARNING", "pacs", "--data-dir",
             str(tmp_path / "pacs"), "--processes", str(processes), "--urls-file", str(urls_file), *extra],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
            stderr=log_file)
    deadline = time.monotonic() + 60
    while not urls_file.exists():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the PACS did not write its URLs file"
        time.sleep(0.05)
    return Running(proc, json.loads(urls_file.read_text())["pacs_dicomweb"], log)


def stop(running: Running, sig: int = signal.SIGTERM) -> int:
    if running.proc.poll() is None:
        running.proc.send_signal(sig)
    try:
        return running.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        running.proc.kill()
        raise


@pytest.fixture(params=[(), ("--no-fsync",)], ids=["fsync", "no-fsync"])
def two_workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    """Two workers; with and without fsync, as parts are then stored in worker threads or on the event
    loop (servers/pacs/handlers.py)."""
    running = start(tmp_path, 2, *request.param)
    yield running
    stop(running)


def variant(data: bytes, sop_uid: str, description: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(sop_uid)
    ds.SeriesDescription = description
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def stow(url: str, blobs: list[bytes]) -> httpx.Response:
    body, boundary = encode_parts([("application/dicom", b) for b in blobs])
    return httpx.post(url + "/studies", content=body, timeout=60,
                      headers={"Content-Type": STOW_TYPE.format(boundary)})


def test_two_workers_store_concurrently_without_losing_or_mixing_objects(
        two_workers: Running, plan_files: dict[str, bytes], tmp_path: Path) -> None:
    assert len(two_workers.workers()) == 2
    template = next(iter(plan_files.values()))
    # 8 clients at once: each stores objects of its own, the same shared objects as every other client,
    # and its own version of contested objects (same SOP Instance UID, different bytes)
    shared = [variant(template, f"1.2.826.0.1.3680043.8.498.90.{i}", "shared") for i in range(4)]
    contested = {c: [variant(template, f"1.2.826.0.1.3680043.8.498.91.{i}", f"client {c}") for i in range(4)]
                 for c in range(8)}
    own = {c: [variant(template, f"1.2.826.0.1.3680043.8.498.92.{c}.{i}", "own") for i in range(6)]
           for c in range(8)}

    def client(c: int) -> list[tuple[int, bytes]]:
        outcomes = []
        for blob in [*own[c], *shared, *contested[c]]:
            response = stow(two_workers.url, [blob])
            outcomes.append((response.status_code, blob))
        return outcomes

    with ThreadPoolExecutor(8) as pool:
        results = [r for rs in pool.map(client, range(8)) for r in rs]
    assert {status for status, _ in results} <= {200, 409}, sorted({s for s, _ in results})
    assert all(status == 200 for status, blob in results if blob in shared)
    winners = [blob for status, blob in results if status == 200 and b"client " in blob]
    assert len(winners) == 4  # one version of each contested object, whichever came first

    dicomweb = DICOMwebClient(two_workers.url)
    study = pydicom.dcmread(io.BytesIO(template)).StudyInstanceUID
    stored = {ds.SOPInstanceUID: ds for ds in dicomweb.retrieve_study(study)}
    expected_uids = {pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID
                     for b in [*shared, *winners, *(b for bs in own.values() for b in bs)]}
    assert set(stored) == expected_uids and len(stored) == 4 + 4 + 48
    for blob in winners:
        ds = pydicom.dcmread(io.BytesIO(blob))
        assert stored[ds.SOPInstanceUID].SeriesDescription == ds.SeriesDescription
    found = dicomweb.search_for_instances(study, search_filters={"limit": "1000"})
    assert len(found) == len(expected_uids)

    assert stop(two_workers) == 0
    assert check_consistent(tmp_path / "pacs") == len(expected_uids)


def test_the_supervisor_keeps_the_folder_and_stops_every_worker_on_sigint(tmp_path: Path) -> None:
    running = start(tmp_path, 3)
    workers = running.workers()
    assert len(workers) == 3
    with pytest.raises(StoreInUse):
        Store(tmp_path / "pacs")
    assert httpx.get(running.url + "/studies").status_code == 204
    assert stop(running, signal.SIGINT) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    Store(tmp_path / "pacs").close()  # released


def test_a_worker_that_dies_stops_the_server_loudly(tmp_path: Path) -> None:
    running = start(tmp_path, 2)
    first, second = running.workers()
    os.kill(first, signal.SIGKILL)
    assert running.proc.wait(timeout=30) == 1
    assert f"worker process {first} exited" in running.log.read_text()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{second}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{second}").exists()


def test_processes_must_be_positive(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "servers.cli", "pacs", "--processes", "0"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60)
    assert done.returncode == 2 and b"must be at least 1" in done.stderr


def test_a_worker_that_cannot_start_stops_the_server_before_it_announces_itself(tmp_path: Path) -> None:
    # the workers' writer lock file cannot be opened (a folder has its name): each worker fails while
    # building its application, after the supervisor has opened the store
    (tmp_path / "pacs").mkdir()
    (tmp_path / "pacs" / "write.lock").mkdir()
    urls_file = tmp_path / "urls.json"
    done = subprocess.run(
        [sys.executable, "-m", "servers.cli", "--log-level", "WARNING", "pacs", "--data-dir",
         str(tmp_path / "pacs"), "--processes", "2", "--urls-file", str(urls_file)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60)
    assert done.returncode == 1
    assert not urls_file.exists() and b"pacs_dicomweb" not in done.stdout
    assert b"failed while starting" in done.stderr


def test_start_up_failures_are_one_clear_line_and_status_1(tmp_path: Path) -> None:
    """A port in use and a data folder in use (by a store of this process) are refused with a message,
    not a traceback, in both the single-process and the pre-forked mode."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    held = Store(tmp_path / "held")
    try:
        cases = [(["--port", str(taken.getsockname()[1]), "--data-dir", str(tmp_path / "free")],
                  b"Address already in use"),
                 (["--data-dir", str(tmp_path / "held")], b"is in use by another store")]
        for extra, message in cases:
            for processes in ("1", "2"):
                done = subprocess.run(
                    [sys.executable, "-m", "servers.cli", "pacs", "--processes", processes, *extra],
                    cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60)
                assert done.returncode == 1, done.stderr
                assert message in done.stderr and b"Traceback" not in done.stderr, done.stderr
    finally:
        held.close()
        taken.close()


def test_signals_to_every_process_at_once_stop_them_all(tmp_path: Path) -> None:
    """As ``pkill -f`` does: SIGTERM to the supervisor and to each worker together, twice, while the
    supervisor forwards its own. A worker whose handler was interrupted by the next signal once hung
    (a signal handler setting a threading.Event)."""
    for round_ in range(3):
        running = start(tmp_path / str(round_), 2)
        pids = [running.proc.pid, *running.workers()]
        for _ in range(2):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):  # a worker may be gone by the second one
                    os.kill(pid, signal.SIGTERM)
        assert running.proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(Path(f"/proc/{pid}").exists() for pid in pids[1:])
