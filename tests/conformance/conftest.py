"""Fixtures of the conformance suite: Orthanc (the reference) and our PACS, loaded with the same files.

The reference is a private Orthanc of this suite (not the shared session ``orthanc`` fixture, which
other suites may clear or fill). Orthanc is loaded through its own REST API; our PACS through STOW-RS
with dicomweb-client, so a PACS that cannot store fails here, loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient

from servers.pacs.app import make_app
from servers.pacs.settings import PACSSettings
from servers.runtime import ServerLoop
from tests.conformance.dataset import Instance, build_instances
from tests.support.fixtures import orthanc  # noqa: F401  (the shared session fixture, tested here)
from tests.support.orthanc import OrthancServer


@dataclass(frozen=True)
class Pair:
    """DICOMweb base URLs of the reference (Orthanc) and of ours (the PACS under test)."""

    reference: str
    ours: str


def start_pacs(loop: ServerLoop, data_dir: Path) -> str:
    """Serve a PACS on a free loopback port with ``data_dir`` as its store; return its DICOMweb base."""
    settings = PACSSettings(data_dir=data_dir)
    served = loop.serve(lambda url: make_app(settings, url))
    return f"{served.url}/dicom-web"


@pytest.fixture(scope="session")
def instances() -> list[Instance]:
    return build_instances()


@pytest.fixture(scope="session")
def loaded(server_loop: ServerLoop, tmp_path_factory: pytest.TempPathFactory,
           instances: list[Instance]) -> Iterator[Pair]:
    """Orthanc and our PACS, each holding exactly the conformance set. Tests must not write to them."""
    with OrthancServer(tmp_path_factory.mktemp("orthanc-loaded")) as reference:
        reference.load(i.data for i in instances)
        ours = start_pacs(server_loop, tmp_path_factory.mktemp("pacs-loaded"))
        DICOMwebClient(ours).store_instances([i.dataset() for i in instances])
        yield Pair(reference.dicomweb_url, ours)


@pytest.fixture(scope="session")
def scratch_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """An Orthanc the upload tests write to (emptied by :func:`fresh_pair` for each module)."""
    with OrthancServer(tmp_path_factory.mktemp("orthanc-scratch")) as scratch:
        yield scratch


@pytest.fixture(scope="module")
def fresh_pair(server_loop: ServerLoop, tmp_path_factory: pytest.TempPathFactory,
               scratch_orthanc: OrthancServer) -> Pair:
    """An empty Orthanc and a new, empty PACS, for one test module's uploads."""
    scratch_orthanc.clear()
    return Pair(scratch_orthanc.dicomweb_url, start_pacs(server_loop, tmp_path_factory.mktemp("pacs-fresh")))


@pytest.fixture(scope="session")
def by_uid(instances: list[Instance]) -> Callable[[str], Instance]:
    index = {i.sop_instance_uid: i for i in instances}
    return index.__getitem__
