"""Fixtures of the widget tests: the real demo stack on loopback (EHR pages, broker, PACS) and a session
of the kit signed in through the EHR's real pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers.demo_data.plan import DemoOptions, DemoPlan, make_plan
from servers.runtime import ServerLoop


@pytest.fixture(scope="session")
def widget_plan() -> DemoPlan:
    return make_plan(DemoOptions(patients=2, studies_per_patient=(3, 3), series_per_study=(2, 2),
                                 instances_per_series=(2, 2), rows=16, columns=16))


@pytest.fixture(scope="session")
def widget_stack(server_loop: ServerLoop, tmp_path_factory: pytest.TempPathFactory,
                 widget_plan: DemoPlan) -> dict[str, Any]:
    from servers.demo import DemoContext, start_stack

    return start_stack(DemoContext(data_dir=tmp_path_factory.mktemp("widget-stack"), plan=widget_plan),
                       server_loop)


@pytest.fixture
def user(widget_stack: dict[str, Any]) -> dict[str, Any]:
    return dict(widget_stack["users"][0])


@pytest.fixture
def token_path(tmp_path: Path) -> Path:
    return tmp_path / "jupyter-data" / "s4s_jupyter" / "tokens.json"


@pytest.fixture
def session(widget_stack: dict[str, Any], token_path: Path) -> Iterator[Any]:
    """A session that has not signed in yet (its tokens go to ``token_path``)."""
    import s4s_jupyter as s4s

    with s4s.connect(widget_stack["ehr_fhir"], login=False, token_store=token_path) as ehr:
        yield ehr


@pytest.fixture
def signed_in(session: Any, user: dict[str, Any]) -> Any:
    from s4s_jupyter.client.automation import FormLogin

    session.login(browser=FormLogin(user["username"], user["password"]), timeout=30)
    return session


@pytest.fixture(autouse=True)
def _no_extension_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Widget tests decide themselves whether a server extension is around."""
    for name in ("S4S_JUPYTER_BASE_URL", "S4S_TOKEN_STORE", "S4S_EHR_URL"):
        monkeypatch.delenv(name, raising=False)
