"""The systems under test, each a real server on loopback: our PACS, broker and EHR, and Orthanc.

Our PACS and broker run as ``s4s-servers`` subprocesses (their memory is their own and they share no GIL
with the measuring client); the EHR and the token introspection service run in this process's
:class:`~servers.runtime.ServerLoop` (they answer one introspection per brokered request, or FHIR pages).
Orthanc is the project's harness (:class:`tests.support.orthanc.OrthancServer`: loopback only, its own
storage folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from servers.demo_data.plan import DemoPlan
from servers.ehr.app import make_app as make_ehr
from servers.ehr.oauth.clients import BROKER_CLIENT_ID, INTROSPECTION_CLIENT_ID, demo_clients_json
from servers.ehr.oauth.clients import Client as OAuthClient
from servers.ehr.settings import EHRSettings
from servers.introspection.app import make_app as make_introspection
from servers.introspection.settings import IntrospectionSettings, Mode
from servers.pacs.store import Store
from servers.runtime import ServerLoop
from tests.broker.launch import launch
from tests.support.orthanc import OrthancServer


def drop_caches() -> bool:
    """Empty the kernel's page cache (``echo 3 > /proc/sys/vm/drop_caches``); False when not root."""
    if os.geteuid() != 0:
        return False
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def start_role(args: list[str], work: Path, name: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    urls = work / f"{name}-urls.json"
    urls.unlink(missing_ok=True)
    log = (work / f"{name}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "servers.cli", "--log-level", "WARNING", *args,
                             "--urls-file", str(urls)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not urls.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{name} did not start; see {work / (name + '.log')}")
        time.sleep(0.05)
    return proc, json.loads(urls.read_text())


def load_pacs(store_dir: Path, files: Iterable[Path]) -> int:
    """Put files straight into a PACS store (no HTTP: the store's own ``put``), before the PACS starts."""
    store = Store(store_dir, fsync=False)
    try:
        n = 0
        for path in files:
            store.put(path.read_bytes())
            n += 1
        return n
    finally:
        store.close()


def load_orthanc(orthanc: OrthancServer, files: Iterable[Path], threads: int = 2) -> int:
    """``POST /instances`` every file (Orthanc's own REST API, its fastest way in), ``threads`` at once."""
    paths = list(files)
    chunks = [paths[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        return sum(len(ids) for ids in pool.map(orthanc.load, chunks))


def start_pacs(store_dir: Path, work: Path, extra: list[str] | None = None
               ) -> tuple[subprocess.Popen[bytes], str]:
    """``s4s-servers pacs`` on the store, in a subprocess with one worker process per core, listening on
    ``work/pacs.sock`` and taking handoffs on ``work/pacs-handoff.sock`` too (for the brokers), with
    ``extra`` arguments; returns the (supervisor) process and its DICOMweb base."""
    processes = str(os.cpu_count() or 1)  # as Orthanc, which uses every core by default
    proc, urls = start_role(["pacs", "--data-dir", str(store_dir), "--no-fsync", "--processes", processes,
                             "--unix-socket", str(pacs_socket(work)),
                             "--handoff-socket", str(pacs_handoff(work)), *(extra or [])], work, "pacs")
    return proc, str(urls["pacs_dicomweb"])


def pacs_socket(work: Path) -> Path:
    """The Unix socket :func:`start_pacs` listens on."""
    return work / "pacs.sock"


def pacs_handoff(work: Path) -> Path:
    """The handoff socket of :func:`start_pacs` (:mod:`servers.handoff`)."""
    return work / "pacs-handoff.sock"


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class BrokerStack:
    """EHR and introspection (in the benchmark's loop) and brokers (subprocesses) in front of a PACS."""

    ehr: str
    introspection: str
    secret_file: Path
    work: Path
    brokers: list[subprocess.Popen[bytes]]

    def token(self, plan: DemoPlan, patient_id: str) -> str:
        """A real access token for ``patient_id`` from the EHR (login, picker, consent, PKCE exchange)."""
        user = next(u for u in plan.users if u.patient_ids == (patient_id,))
        return str(launch(self.ehr, user.username, user.password, patient_id)["access_token"])

    def start_broker(self, pacs_dicomweb: str, pacs_unix_socket: Path | None = None,
                     pacs_handoff: Path | None = None, pacs_store: Path | None = None,
                     processes: int = 1) -> str:
        """One more ``s4s-servers broker`` in front of ``pacs_dicomweb``, reaching it over
        ``pacs_unix_socket`` when given, else over TCP, and handing retrieves' connections to it over
        ``pacs_handoff`` when given, or answering them itself from ``pacs_store`` (the PACS's data
        folder) when given, with ``processes`` worker processes; returns its DICOMweb base."""
        name = f"broker-{len(self.brokers)}"
        proc, urls = start_role(["broker", "--pacs", pacs_dicomweb, "--introspection", self.introspection,
                                 "--ehr", self.ehr + "/fhir", "--client-secret-file", str(self.secret_file),
                                 "--data-dir", str(self.work / name),
                                 *(["--pacs-socket", str(pacs_unix_socket)] if pacs_unix_socket else []),
                                 *(["--pacs-handoff", str(pacs_handoff)] if pacs_handoff else []),
                                 *(["--pacs-store", str(pacs_store)] if pacs_store else []),
                                 "--processes", str(processes)],
                                self.work, name)
        self.brokers.append(proc)
        return str(urls["broker_dicomweb"])


def start_broker_stack(loop: ServerLoop, plan: DemoPlan, work: Path) -> BrokerStack:
    """The EHR (with ``plan``'s patients) and the introspection service on loopback, ready for brokers."""
    secrets = {BROKER_CLIENT_ID: "bench-broker-secret-0123456789",
               INTROSPECTION_CLIENT_ID: "bench-intro-secret-0123456789"}
    regs = demo_clients_json()["clients"]
    for reg in regs:
        if reg["client_id"] in secrets:
            reg["client_secret"] = secrets[reg["client_id"]]
    clients = tuple(OAuthClient.from_json(r) for r in regs)
    ehr_settings = EHRSettings(data_dir=work / "ehr", plan=plan, clients=clients)
    ehr = loop.serve(lambda url: make_ehr(ehr_settings, url)).url
    intro_settings = IntrospectionSettings(ehr_fhir=ehr + "/fhir", mode=Mode.RELAY,
                                           client_id=INTROSPECTION_CLIENT_ID,
                                           client_secret=secrets[INTROSPECTION_CLIENT_ID], callers=clients)
    intro = loop.serve(lambda url: make_introspection(intro_settings, url)).url + "/introspect"
    secret_file = work / "broker-secret"
    secret_file.write_text(secrets[BROKER_CLIENT_ID])
    os.chmod(secret_file, 0o600)
    return BrokerStack(ehr, intro, secret_file, work, [])


class PeakRSS:
    """Samples the resident memory of a process and its children (a pre-forked server's workers; pages
    they share are counted in each, so the sum errs high) every ``interval`` seconds while the block runs.

    ``with PeakRSS(pid) as m: ...`` then ``m.before`` (at entry) and ``m.peak`` (highest sample, bytes).
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.before = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def _rss(self) -> int:
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    def __enter__(self) -> PeakRSS:
        self.before = self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
