"""Shared fixtures: real servers on loopback, in this process, on free ports, with temporary data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servers.demo_data.plan import DemoOptions, DemoPlan, make_plan
from servers.runtime import ServerLoop


@pytest.fixture(scope="session")
def server_loop() -> Iterator[ServerLoop]:
    """One event loop thread serving every app a test session starts."""
    loop = ServerLoop().start()
    yield loop
    loop.stop()


@pytest.fixture(scope="session")
def demo_plan() -> DemoPlan:
    """The default demo plan (the same as ``s4s-servers demo`` uses)."""
    return make_plan(DemoOptions())


@pytest.fixture(scope="session")
def small_plan() -> DemoPlan:
    """A small fixed-shape plan for fast tests: 3 patients, 2 studies each, 2 series of 3 instances."""
    return make_plan(DemoOptions(patients=3, studies_per_patient=(2, 2), series_per_study=(2, 2),
                                 instances_per_series=(3, 3), rows=32, columns=32))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d
