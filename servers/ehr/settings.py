"""Settings of the EHR role (authorization server + FHIR API), one object per running EHR."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.access_token_lifetime <= MAX_ACCESS_TOKEN_LIFETIME:
            raise ValueError(f"access_token_lifetime must be 1..{MAX_ACCESS_TOKEN_LIFETIME} seconds")
        if not 0 < self.code_lifetime <= 600:
            raise ValueError("code_lifetime must be 1..600 seconds (RFC 6749 4.1.2)")

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
