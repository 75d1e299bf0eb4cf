"""Fixtures of the kit's tests: the real servers on loopback, in this process, and Orthanc.

- ``kit_plan``: a small deterministic demo plan (3 patients, 2 studies of 2 series of 3 instances each);
- ``pacs``: our PACS seeded with that plan (DICOMweb base URL, no authorization);
- ``orthanc_pacs``: a private Orthanc (outside reference) loaded with the same files;
- ``stack``: the demo stack (:func:`servers.demo.start_stack`) on that plan: every role that exists,
  with the URLs file's content (``ehr_fhir``, ``broker_fhir``, ``users``, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers.demo_data.plan import DemoOptions, DemoPlan, make_plan
from servers.runtime import ServerLoop
from tests.support.orthanc import OrthancServer


@pytest.fixture(scope="session")
def kit_plan() -> DemoPlan:
    return make_plan(DemoOptions(patients=3, studies_per_patient=(2, 2), series_per_study=(2, 2),
                                 instances_per_series=(3, 3), rows=32, columns=32))


@pytest.fixture(scope="session")
def pacs(server_loop: ServerLoop, tmp_path_factory: pytest.TempPathFactory, kit_plan: DemoPlan) -> str:
    """Our PACS holding ``kit_plan``; its DICOMweb base URL."""
    from servers.pacs.app import dicomweb_url, make_app
    from servers.pacs.seed import seed
    from servers.pacs.settings import PACSSettings

    settings = PACSSettings(data_dir=tmp_path_factory.mktemp("kit-pacs"), fsync=False)
    served = server_loop.serve(lambda url: make_app(settings, url))
    seed(served.app.settings["pacs"].store, kit_plan)
    return dicomweb_url(served.url)


@pytest.fixture(scope="session")
def orthanc_pacs(tmp_path_factory: pytest.TempPathFactory, kit_plan: DemoPlan) -> Iterator[OrthancServer]:
    """A private Orthanc holding the first two patients of ``kit_plan`` (loaded through its REST API)."""
    from servers.demo_data.dicom import iter_study

    with OrthancServer(tmp_path_factory.mktemp("kit-orthanc")) as orthanc:
        for patient in kit_plan.patients[:2]:
            for study in patient.studies:
                orthanc.load(data for _, data in iter_study(patient, study))
        yield orthanc


@pytest.fixture(scope="session")
def stack(server_loop: ServerLoop, tmp_path_factory: pytest.TempPathFactory,
          kit_plan: DemoPlan) -> dict[str, Any]:
    """The demo stack on ``kit_plan`` (no auto-approve: logins go through the real pages)."""
    from servers.demo import DemoContext, start_stack

    ctx = DemoContext(data_dir=tmp_path_factory.mktemp("kit-stack"), plan=kit_plan)
    return start_stack(ctx, server_loop)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return tmp_path / "jupyter-data" / "s4s_jupyter" / "tokens.json"


@pytest.fixture(scope="session")
def auto_stack(server_loop: ServerLoop, tmp_path_factory: pytest.TempPathFactory,
               kit_plan: DemoPlan) -> dict[str, Any]:
    """The demo stack on ``kit_plan`` with the EHR's demo-only ``auto_approve``: a loopback login needs no
    pages, and the EHR picks the user and patient from the ``patient`` / ``login_hint`` hints."""
    from servers.demo import DemoContext, start_stack

    ctx = DemoContext(data_dir=tmp_path_factory.mktemp("kit-auto-stack"), plan=kit_plan, auto_approve=True)
    return start_stack(ctx, server_loop)
