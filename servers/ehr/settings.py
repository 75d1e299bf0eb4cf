"""Settings of the EHR role (authorization server + FHIR API), one object per running EHR."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers.broker.settings import MR_TYPE
from servers.demo_data.plan import DemoPlan
from servers.ehr.oauth.clients import Client

#: SMART App Launch and DESIGN.md: access tokens live at most one hour.
MAX_ACCESS_TOKEN_LIFETIME = 3600


@dataclass(frozen=True)
class AssociatedEndpoint:
    """An entry of ``associated_endpoints`` in the SMART configuration (SMART App Launch 2.x 2.0.x,
    "Metadata"): another FHIR server that accepts this EHR's tokens, e.g. the imaging broker with
    ``smart-imaging-access``."""

    url: str
    capabilities: tuple[str, ...] = ("smart-imaging-access",)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "capabilities": list(self.capabilities)}


@dataclass(frozen=True)
class EHRSettings:
    """Everything an EHR needs; :func:`servers.ehr.app.make_app` builds the server from it.

    ``plan`` gives the patients (FHIR data) and the logins (``plan.users``); ``clients`` the registered
    OAuth clients. ``auto_approve`` is DEMO ONLY: authorize skips login, picker and consent for loopback
    redirect URIs. ``clock`` returns seconds since the epoch (tests pass a fake one).
    """

    data_dir: Path
    plan: DemoPlan
    clients: tuple[Client, ...] = ()
    auto_approve: bool = False
    associated_endpoints: tuple[AssociatedEndpoint, ...] = ()
    access_token_lifetime: int = MAX_ACCESS_TOKEN_LIFETIME
    #: RFC 6749 4.1.2 recommends at most 10 minutes; one is plenty for a redirect and an exchange.
    code_lifetime: int = 60
    refresh_token_lifetime: int = 30 * 24 * 3600
    #: how long a user has for login, picker and consent
    pending_request_lifetime: int = 600
    #: signs the pending-request cookie; a fresh random one per start when None
    cookie_secret: str | None = None
    #: DICOMweb base of a PACS: when set, the EHR mounts the broker's handlers and serves
    #: ``{ehr}/fhir/ImagingStudy``, ``{ehr}/fhir/Endpoint/{id}`` and ``{ehr}/dicom-web`` itself
    pacs_url: str | None = None
    #: which ``Patient.identifier`` is the DICOM PatientID (the broker's rule: ``type:SYSTEM|CODE`` or
    #: ``system:URI``); default the v2-0203 MR type
    pacs_patient_identifier: str = f"type:{MR_TYPE}"
    #: sign-in throttle (servers/ehr/oauth/throttle.py): at most ``login_account_failures`` failed
    #: sign-ins per account and ``login_address_failures`` per client address within
    #: ``login_failure_window`` seconds; failures decay over that window
    login_account_failures: int = 10
    login_address_failures: int = 100
    login_failure_window: float = 900.0
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.access_token_lifetime <= MAX_ACCESS_TOKEN_LIFETIME:
            raise ValueError(f"access_token_lifetime must be 1..{MAX_ACCESS_TOKEN_LIFETIME} seconds")
        if not 0 < self.code_lifetime <= 600:
            raise ValueError("code_lifetime must be 1..600 seconds (RFC 6749 4.1.2)")
        limits = (self.login_account_failures, self.login_address_failures)
        if min(limits) < 1 or self.login_failure_window <= 0:
            raise ValueError("the sign-in throttle needs limits >= 1 and a positive window")

    def imaging_endpoints(self, fhir_base: str) -> tuple[AssociatedEndpoint, ...]:
        """``associated_endpoints`` of the SMART configuration: the configured ones; else, when the EHR
        serves imaging itself (``pacs_url``), its own FHIR base with ``smart-imaging-access``."""
        if self.associated_endpoints or not self.pacs_url:
            return self.associated_endpoints
        return (AssociatedEndpoint(fhir_base.rstrip("/")),)

    @property
    def ehr_dir(self) -> Path:
        """The EHR's own folder under the data folder."""
        return Path(self.data_dir) / "ehr"

    @property
    def oauth_db_path(self) -> Path:
        return self.ehr_dir / "oauth.sqlite"

    @property
    def signing_key_path(self) -> Path:
        return self.ehr_dir / "id-token-signing-key.json"
