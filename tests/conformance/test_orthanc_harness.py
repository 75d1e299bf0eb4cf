"""The Orthanc harness (tests/support/orthanc.py) that tests and benchmarks share."""

from __future__ import annotations

import json
import logging
import os
import socket

import httpx
import pytest

from tests.conformance.dataset import Instance
from tests.support.orthanc import OrthancError, OrthancOptions, OrthancServer, loopback_only_netns

pytestmark = pytest.mark.orthanc


def test_starts_from_project_config_loads_and_cleans_up(caplog: pytest.LogCaptureFixture,
                                                       instances: list[Instance]) -> None:
    caplog.set_level(logging.INFO, logger="s4s.tests.orthanc")
    server = OrthancServer()
    with server:
        config = json.loads((server.work_dir / "orthanc-config.json").read_text())
        assert config["RemoteAccessAllowed"] is False
        assert config["AuthenticationEnabled"] is False
        assert config["DicomServerEnabled"] is False
        assert config["DicomWeb"]["Root"] == "/dicom-web/"
        assert config["DicomWeb"]["StudiesMetadata"] == config["DicomWeb"]["SeriesMetadata"] == "Full"
        assert config["StorageDirectory"].startswith(str(server.work_dir))
        assert httpx.get(f"{server.url}/system").json()["DicomPort"] == config["DicomPort"]
        r = httpx.get(f"{server.dicomweb_url}/studies")
        assert r.status_code == 200 and r.json() == []
        assert "remote access is not allowed" in server.log_path.read_text()

        ids = server.load(i.data for i in instances[:3])
        assert len(set(ids)) == 3
        assert server.statistics()["CountInstances"] == 3
        with pytest.raises(OrthancError, match="refused"):
            server.load([b"not a DICOM file"])
        server.clear()
        assert server.statistics()["CountInstances"] == 0
        pid, port, work_dir = server.pid, server.http_port, server.work_dir
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert not work_dir.exists()
    case = "only lo" if loopback_only_netns() else "interfaces besides lo"
    assert any(case in r.getMessage() for r in caplog.records)


def test_dicom_server_on_request_answers_c_echo() -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    with OrthancServer(options=OrthancOptions(dicom=True, aet="S4SREF")) as server:
        assert server.dicom_port
        ae = AE(ae_title="S4STEST")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="S4SREF")
        assert assoc.is_established
        status = assoc.send_c_echo()
        assoc.release()
        assert status.Status == 0x0000


def test_shared_session_fixture_serves_dicomweb(orthanc: OrthancServer) -> None:
    """The fixture other suites import (tests/support/fixtures.py): running, DICOMweb at the base URL."""
    assert orthanc.dicomweb_url == f"{orthanc.url}/dicom-web"
    r = httpx.get(f"{orthanc.dicomweb_url}/studies", params={"PatientID": "NO-SUCH-MRN"})
    assert r.status_code == 200 and r.json() == []
