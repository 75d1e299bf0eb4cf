"""pytest fixtures for outside reference systems.

Import them into a conftest (``from tests.support.fixtures import orthanc  # noqa: F401``). Orthanc is a
real outside server: when its Debian packages are missing the fixture fails with the install hint
rather than skipping, so a missing reference never passes silently.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.orthanc import OrthancServer


@pytest.fixture(scope="session")
def orthanc() -> Iterator[OrthancServer]:
    """One Orthanc (DICOMweb plugin, DICOM server off) for the whole session, in a temporary folder.

    Tests that need an empty store call ``orthanc.clear()`` first.
    """
    with OrthancServer() as server:
        yield server
