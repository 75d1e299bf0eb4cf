"""Fixtures of the server extension's tests: pytest_jupyter's Jupyter server (``jp_fetch``) with the
extension enabled, under a JupyterHub-like ``base_url``, configured for the real demo EHR started
in-process on loopback.

pytest refuses ``pytest_plugins`` outside the root conftest, so the plugin's fixtures and hooks are
imported here; they apply to this folder only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403 - the jp_* fixtures and the async test hooks
from traitlets.config import Config

from servers.demo_data.plan import DemoOptions, DemoPlan, make_plan
from servers.runtime import ServerLoop

BASE_URL = "/jupyter/user/demo/"
#: configured, but nothing listens there (the discard port on loopback refuses connections)
UNREACHABLE_EHR = "http://127.0.0.1:9/fhir"


def register_redirects(data_dir: Path, uris: list[str]) -> None:
    """Write the EHR's demo clients file with the kit's client accepting ``uris`` too (what an operator
    does for a Jupyter server under a prefix; docs/jupyter.md)."""
    from servers.ehr.oauth.clients import KIT_CLIENT_ID, demo_clients_json, demo_clients_path

    data = demo_clients_json()
    for client in data["clients"]:
        if client["client_id"] == KIT_CLIENT_ID:
            client["redirect_uris"] = [*client["redirect_uris"], *uris]
    path = demo_clients_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="session")
def ext_plan() -> DemoPlan:
    return make_plan(DemoOptions(patients=2, studies_per_patient=(1, 1), series_per_study=(1, 1),
                                 instances_per_series=(2, 2), rows=16, columns=16))


@pytest.fixture(scope="session")
def ehr_stack(server_loop: ServerLoop, tmp_path_factory: pytest.TempPathFactory,
              ext_plan: DemoPlan) -> dict[str, Any]:
    """The demo stack (real EHR pages, no auto-approve); the kit client accepts the prefixed callback."""
    from servers.demo import DemoContext, start_stack

    data_dir = tmp_path_factory.mktemp("ext-stack")
    register_redirects(data_dir, [f"http://127.0.0.1{BASE_URL}s4s/oauth/callback",
                                  f"http://localhost{BASE_URL}s4s/oauth/callback"])
    return start_stack(DemoContext(data_dir=data_dir, plan=ext_plan), server_loop)


@pytest.fixture  # type: ignore[no-redef]  # overrides the star-imported fixture
def jp_base_url() -> str:
    return BASE_URL


@pytest.fixture
def token_path(tmp_path: Path) -> Path:
    return tmp_path / "tokens" / "tokens.json"


@pytest.fixture  # type: ignore[no-redef]  # overrides the star-imported fixture
def jp_server_config(ehr_stack: dict[str, Any], token_path: Path) -> Config:
    return Config({
        "ServerApp": {"jpserver_extensions": {"s4s_jupyter.serverext": True}},
        "S4SExtension": {"ehr_url": ehr_stack["ehr_fhir"], "token_store_path": str(token_path),
                         "allowed_ehr_urls": [UNREACHABLE_EHR]},
    })


@pytest.fixture(autouse=True)
def _restore_s4s_environment() -> Iterator[None]:
    """The extension exports S4S_* into the server's (here: pytest's) environment; undo it."""
    before = {k: v for k, v in os.environ.items() if k.startswith("S4S_")}
    yield
    for key in [k for k in os.environ if k.startswith("S4S_")]:
        del os.environ[key]
    os.environ.update(before)


class CookieFetch:
    """``jp_fetch`` that keeps cookies like a browser: Jupyter's login cookie carries the user identity
    from one request to the next (token-authenticated requests without it are a new anonymous user)."""

    def __init__(self, jp_fetch: Any) -> None:
        self._fetch = jp_fetch
        self.cookies: dict[str, str] = {}

    async def __call__(self, *parts: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        headers = dict(headers or {})
        if self.cookies and "Cookie" not in headers:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await self._fetch(*parts, headers=headers, **kwargs)
        for line in response.headers.get_list("Set-Cookie"):
            name, _, rest = line.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response


@pytest.fixture
def browser_fetch(jp_fetch: Any) -> CookieFetch:
    return CookieFetch(jp_fetch)
