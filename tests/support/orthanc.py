"""Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) as an outside reference PACS.

Tests, benchmarks and broker tests start a private Orthanc from the project's configuration
(``orthanc.json`` next to this module) with its own temporary storage and index folder and a free HTTP
port; the Debian service and ``/etc/orthanc`` are never used. Fixed settings (see the JSON file):
``RemoteAccessAllowed`` false and ``AuthenticationEnabled`` false (loopback clients only, no
credentials), the DICOM server off unless asked for, the DICOMweb plugin at ``/dicom-web/`` with
``StudiesMetadata``/``SeriesMetadata`` ``Full`` (metadata read from the stored files, so its answers can
be compared attribute by attribute with another PACS), no HTTP compression, no Explorer, no WebDAV.

Orthanc 1.10 cannot bind its sockets to one address: it listens on every interface of its network
namespace. The project's test command runs pytest in a namespace that has only ``lo``; elsewhere
``RemoteAccessAllowed`` false still refuses every non-loopback client. :func:`loopback_only_netns`
tells which case applies and :class:`OrthancServer` logs it.

Usage::

    with OrthancServer() as orthanc:
        orthanc.load([path_or_bytes, ...])          # POST /instances, Orthanc's own REST API
        DICOMwebClient(orthanc.dicomweb_url).search_for_studies()
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

log = logging.getLogger("s4s.tests.orthanc")

#: Debian's Orthanc executable and DICOMweb plugin.
ORTHANC_EXECUTABLE = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: The project's base configuration; run-specific keys (folders, ports, plugins) are filled in at start.
BASE_CONFIG = Path(__file__).with_name("orthanc.json")


class OrthancError(RuntimeError):
    """Orthanc is missing, did not start, or refused an operation of the harness."""


def orthanc_missing() -> str | None:
    """Why Orthanc cannot run here (a message naming the Debian packages), or None if it can."""
    missing = [str(p) for p in (ORTHANC_EXECUTABLE, DICOMWEB_PLUGIN) if not p.exists()]
    if missing:
        return (f"missing {', '.join(missing)}: install the Debian packages orthanc and orthanc-dicomweb "
                "(`make debian`)")
    return None


def loopback_only_netns() -> bool:
    """Whether the current network namespace has no interface but ``lo``.

    Asks the kernel for this process's namespace (``if_nameindex``); ``/sys/class/net`` would show the
    namespace sysfs was mounted in, which differs under ``unshare -n`` / ``ip netns exec`` without a
    remount.
    """
    try:
        names = {name for _, name in socket.if_nameindex()}
    except OSError:
        return False
    return names == {"lo"}


def free_port() -> int:
    """A TCP port free on every interface now (Orthanc binds the wildcard address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class OrthancOptions:
    """What may differ between two runs of the reference Orthanc.

    ``dicom``: also start Orthanc's DICOM server (for DIMSE paths) on ``dicom_port`` (0: a free port),
    with ``aet`` as its AE title. ``modalities``: Orthanc's ``DicomModalities`` (name -> [AET, host,
    port]) for C-MOVE destinations. ``overrides``: top-level configuration keys to replace (a
    ``"DicomWeb"`` dict is merged into the plugin's section).
    """

    dicom: bool = False
    dicom_port: int = 0
    aet: str = "ORTHANC"
    modalities: dict[str, list[Any]] | None = None
    overrides: dict[str, Any] | None = None
    startup_timeout: float = 20.0


class OrthancServer:
    """A private Orthanc with the DICOMweb plugin, started from the project's configuration.

    ``work_dir``: folder for the configuration, storage, index and log (a fresh temporary folder,
    removed at :meth:`stop`, when None; a given folder is kept). Use as a context manager or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(self, work_dir: Path | None = None, options: OrthancOptions | None = None) -> None:
        self.options = options or OrthancOptions()
        self._own_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="s4s-orthanc-")) if work_dir is None else work_dir
        self.http_port = 0
        self.dicom_port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    # -- addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of Orthanc's REST API (``http://127.0.0.1:{port}``)."""
        if not self.http_port:
            raise OrthancError("Orthanc is not started")
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb base URL (``{url}/dicom-web``), the same form as our PACS's."""
        return f"{self.url}/dicom-web"

    @property
    def aet(self) -> str:
        return self.options.aet

    @property
    def log_path(self) -> Path:
        return self.work_dir / "orthanc.log"

    @property
    def client(self) -> httpx.Client:
        """An httpx client on :attr:`url` for Orthanc's REST API."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=60.0)
        return self._client

    # -- life cycle ------------------------------------------------------------------------------

    def configuration(self) -> dict[str, Any]:
        """The configuration this run uses: the base file with this run's folders, ports and plugin."""
        config: dict[str, Any] = json.loads(BASE_CONFIG.read_text())
        storage = self.work_dir / "storage"
        config.update({
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "HttpPort": self.http_port,
            "DicomServerEnabled": self.options.dicom,
            "DicomAet": self.options.aet,
            "DicomPort": self.dicom_port or 4242,
            "DicomModalities": self.options.modalities or {},
        })
        # BulkDataURIs in WADO-RS metadata are built from this (without it Orthanc 1.10 drops the port)
        config["DicomWeb"]["Host"] = f"127.0.0.1:{self.http_port}"
        for key, value in (self.options.overrides or {}).items():
            if key == "DicomWeb" and isinstance(value, dict):
                config["DicomWeb"] = {**config["DicomWeb"], **value}
            else:
                config[key] = value
        return config

    def start(self, attempts: int = 3) -> OrthancServer:
        """Start Orthanc and wait until ``/system`` answers; retry on another port if one was taken."""
        why = orthanc_missing()
        if why:
            raise OrthancError(why)
        if loopback_only_netns():
            log.info("network namespace has only lo: Orthanc's wildcard listener is reachable from loopback "
                     "only")
        else:
            log.info("network namespace has interfaces besides lo: Orthanc 1.10 listens on all of them; "
                     "RemoteAccessAllowed=false refuses non-loopback clients")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        last = ""
        for _ in range(attempts):
            self.http_port = free_port()
            if self.options.dicom:
                self.dicom_port = self.options.dicom_port or free_port()
            try:
                self._launch()
                log.info("Orthanc %s at %s (DICOM %s)", self.version(), self.url,
                         f"{self.aet}@{self.dicom_port}" if self.options.dicom else "off")
                return self
            except OrthancError as exc:
                last = str(exc)
                self._terminate()
        self.http_port = 0
        raise OrthancError(f"Orthanc did not start after {attempts} attempts: {last}")

    def _launch(self) -> None:
        config_path = self.work_dir / "orthanc-config.json"
        config_path.write_text(json.dumps(self.configuration(), indent=2))
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [str(ORTHANC_EXECUTABLE), str(config_path)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                cwd=self.work_dir, start_new_session=True,
            )
        deadline = time.monotonic() + self.options.startup_timeout
        with httpx.Client(timeout=2.0) as probe:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise OrthancError(f"Orthanc exited with {self._process.returncode}:\n{self.log_tail()}")
                try:
                    if probe.get(f"{self.url}/system").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise OrthancError(f"Orthanc did not answer /system within {self.options.startup_timeout}s:\n"
                           f"{self.log_tail()}")

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 10 s) and remove the temporary folder."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._terminate()
        self.http_port = 0
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _terminate(self) -> None:
        proc, self._process = self._process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("Orthanc did not stop on SIGTERM; killing it")
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> OrthancServer:
        try:
            return self.start()
        except BaseException:
            self.stop()  # no process or temporary folder left behind by a failed start
            raise

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of Orthanc's log (for error messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- content ---------------------------------------------------------------------------------

    def version(self) -> str:
        return str(self.client.get("/system").json()["Version"])

    def load(self, files: Iterable[Path | str | bytes]) -> list[str]:
        """Store DICOM Part 10 files (paths or bytes) through ``POST /instances``; return Orthanc's ids.

        Raises :class:`OrthancError` if Orthanc refuses one. This is Orthanc's own REST API, the fast way
        to fill the reference; STOW-RS is what the conformance tests compare.
        """
        ids: list[str] = []
        for item in files:
            body = item if isinstance(item, bytes) else Path(item).read_bytes()
            r = self.client.post("/instances", content=body,
                                 headers={"Content-Type": "application/dicom"})
            if r.status_code != 200:
                raise OrthancError(f"Orthanc refused an instance ({r.status_code}): {r.text[:300]}")
            ids.append(str(r.json()["ID"]))
        return ids

    def clear(self) -> None:
        """Delete every patient (and so every study, series and instance) Orthanc stores."""
        for patient in self.client.get("/patients").json():
            r = self.client.delete(f"/patients/{patient}")
            if r.status_code != 200:
                raise OrthancError(f"cannot delete patient {patient}: {r.status_code} {r.text[:200]}")

    def statistics(self) -> dict[str, Any]:
        """Orthanc's ``/statistics`` (counts of patients, studies, series, instances; disk size)."""
        result: dict[str, Any] = self.client.get("/statistics").json()
        return result

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None


def _main() -> None:  # pragma: no cover - manual use: python -m tests.support.orthanc
    logging.basicConfig(level=logging.INFO)
    with OrthancServer() as orthanc:
        print(json.dumps({"url": orthanc.url, "dicomweb": orthanc.dicomweb_url, "pid": orthanc.pid}))
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":  # pragma: no cover
    _main()
