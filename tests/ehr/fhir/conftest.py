"""FHIR API fixtures: the real EHR app (``tests/ehr/conftest.py``'s ``ehr``) and real access tokens.

Tokens are minted in the EHR's own OAuth store (hashed, with a lifetime and a grant id), so the FHIR API
checks them through the EHR's real in-process introspector, exactly as for tokens from a launch. One test
(``test_s4s_calls.py``) also gets its token from a real standalone launch through the sign-in pages.
"""

from __future__ import annotations

import importlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from servers.demo_data.clinical import clinical_resources
from servers.demo_data.plan import DemoPlan
from tests.ehr.conftest import RunningEHR


@dataclass(frozen=True)
class Minted:
    token: str
    grant_id: str


def mint(ehr: RunningEHR, scope: str, patient: str | None, *, client_id: str = "s4s-jupyter",
         lifetime: int = 3600) -> Minted:
    """An access token saved in the EHR's OAuth store, as the token endpoint would save it."""
    token, grant = secrets.token_urlsafe(32), secrets.token_hex(8)
    ehr.services.store.save_token(grant_id=grant, client_id=client_id, username=None, patient=patient,
                                  scope=scope, fhir_user=None, id_token_issued=False, access_token=token,
                                  expires_in=lifetime, refresh_token=None, refresh_lifetime=0)
    return Minted(token, grant)


@dataclass
class FHIRClient:
    """Raw HTTP against the EHR's FHIR base with one bearer token."""

    base: str
    token: str | None

    def get(self, path: str, params: Any = None, **headers: str) -> httpx.Response:
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        h.update(headers)
        url = path if path.startswith("http") else f"{self.base}/{path.lstrip('/')}"
        return httpx.get(url, params=params, headers=h)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        h.update(kwargs.pop("headers", {}))
        return httpx.post(f"{self.base}/{path.lstrip('/')}", headers=h, **kwargs)

    def search_all(self, path: str, params: Any = None) -> list[dict[str, Any]]:
        """Follow ``next`` links to the end; returns every entry's resource (match mode only)."""
        out: list[dict[str, Any]] = []
        r = self.get(path, params)
        while True:
            assert r.status_code == 200, r.text
            bundle = r.json()
            out += [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
            nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
            if not nxt:
                return out
            r = self.get(nxt[0])


@pytest.fixture(scope="session")
def chart(small_plan: DemoPlan) -> dict[str, list[dict[str, Any]]]:
    """The generator's resources per patient id: the oracle the API's answers are compared with."""
    by_patient: dict[str, list[dict[str, Any]]] = {p.id: [] for p in small_plan.patients}
    for r in clinical_resources(small_plan):
        ref = r.get("subject") or r.get("patient") or {"reference": "Patient/" + r["id"]}
        pid = ref["reference"].removeprefix("Patient/")
        by_patient[pid].append(r)
    return by_patient


@pytest.fixture(scope="session")
def patient_a(small_plan: DemoPlan) -> str:
    return small_plan.patients[0].id


@pytest.fixture(scope="session")
def patient_b(small_plan: DemoPlan) -> str:
    return small_plan.patients[1].id


@pytest.fixture(scope="session")
def client_for(ehr: RunningEHR) -> Callable[..., FHIRClient]:
    """``client_for(scope, patient)``: a FHIR client with a freshly minted token."""

    def make(scope: str = "launch/patient patient/*.rs", patient: str | None = None, **kw: Any) -> FHIRClient:
        return FHIRClient(ehr.fhir_base, mint(ehr, scope, patient, **kw).token)

    return make


@pytest.fixture(scope="session")
def fhir_a(client_for: Callable[..., FHIRClient], patient_a: str) -> FHIRClient:
    """Patient A's app: ``patient/*.rs`` bound to patient A."""
    return client_for("launch/patient patient/*.rs", patient_a)


def validate_r4(resource: dict[str, Any]) -> None:
    """Validate with two validators we did not write: fhirclient's models (generated from FHIR 4.0.1, i.e.
    R4; strict: unknown elements, wrong types and missing required elements raise) and fhir.resources'
    R4B models (pydantic; R4B keeps R4's definitions of every type served here)."""
    from fhirclient.models.fhirelementfactory import FHIRElementFactory

    rtype = resource["resourceType"]
    FHIRElementFactory.instantiate(rtype, resource)
    module = importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}")
    getattr(module, rtype).model_validate(resource)
