"""``fhir_routes`` mounted in an app of its own: an asynchronous introspector (as a remote RFC 7662 one
would be), a store file under a data folder, and the API's own ``exp`` check failing closed."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import httpx
import tornado.web

from s4s_jupyter.core.introspection import IntrospectionResult
from servers.demo_data.plan import DemoPlan
from servers.ehr.fhir.routes import fhir_routes
from servers.ehr.fhir.store import STORE_FILE, build_store
from servers.ehr.oauth.introspector import TokenIntrospector
from servers.runtime import ServerLoop
from tests.ehr.conftest import RunningEHR
from tests.ehr.fhir.conftest import mint


class AsyncIntrospector:
    """Awaitable answers from the EHR's real introspector, optionally with ``exp`` moved."""

    def __init__(self, inner: TokenIntrospector, exp_shift: float | None = None) -> None:
        self.inner, self.exp_shift = inner, exp_shift

    async def introspect(self, token: str) -> IntrospectionResult:
        result = self.inner.introspect(token)
        if self.exp_shift is not None and result.active:
            result = dataclasses.replace(result, exp=int(time.time() + self.exp_shift))
        return result


def test_async_introspector_file_store_and_past_exp(server_loop: ServerLoop, ehr: RunningEHR, tmp_path: Path,
                                                    small_plan: DemoPlan) -> None:
    path = tmp_path / "ehr" / STORE_FILE
    store = build_store(small_plan, path)
    assert path.is_file() and store.count() > 0
    urls = {"authorize": "http://a/authorize", "token": "http://a/token", "introspect": "http://a/introspect",
            "revoke": "http://a/revoke"}
    introspector = ehr.services.introspector
    fresh = server_loop.serve(lambda url: tornado.web.Application(
        fhir_routes(store, AsyncIntrospector(introspector), url + "/fhir", urls)))
    stale = server_loop.serve(lambda url: tornado.web.Application(
        fhir_routes(store, AsyncIntrospector(introspector, exp_shift=-5), url + "/fhir", urls)))
    patient = small_plan.patients[0].id
    token = mint(ehr, "patient/*.rs", patient).token
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.get(f"{fresh.url}/fhir/Condition", params={"patient": patient}, headers=auth)
    assert r.status_code == 200 and r.json()["total"] > 0
    assert r.json()["entry"][0]["fullUrl"].startswith(fresh.url + "/fhir/Condition/")
    meta = httpx.get(f"{fresh.url}/fhir/metadata").json()
    assert {e["url"] for e in meta["rest"][0]["security"]["extension"][0]["extension"]} == set(urls)
    r = httpx.get(f"{stale.url}/fhir/Condition", params={"patient": patient}, headers=auth)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    store.close()
