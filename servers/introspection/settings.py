"""Settings of the Token Introspection Service (one frozen object per running service)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from servers.ehr.oauth.clients import Client


class Mode(StrEnum):
    """How the service decides (issue 4):

    - ``relay``: ask the EHR's ``introspection_endpoint`` with the service's own client credentials;
    - ``fhir-oracle``: for EHRs without one (2018 Sync for Science EHRs), ``GET Patient/{patient}`` at the
      EHR's FHIR API with the token: 200 means active for that patient;
    - ``auto``: ``relay`` when the EHR's SMART configuration names an introspection endpoint, else the
      oracle.
    """

    RELAY = "relay"
    FHIR_ORACLE = "fhir-oracle"
    AUTO = "auto"


@dataclass(frozen=True)
class IntrospectionSettings:
    """- ``ehr_fhir``: the EHR's FHIR base (its ``.well-known/smart-configuration`` is read from there).
    - ``client_id``/``client_secret``: the service's own confidential client at the EHR (relay mode).
    - ``callers``: the registered clients that may call ``/introspect``; only confidential ones count.
    - ``cache_ttl``: seconds a positive answer is reused (never past its ``exp``); revocation at the EHR
      is seen within it. Negative answers are never cached.
    - ``oracle_scope``: the scope reported for a token the FHIR oracle found active (the oracle learns
      only that the token reads the patient; the scope it stands for is configuration).
    - ``timeout``: seconds to wait for the EHR.
    """

    ehr_fhir: str
    mode: Mode = Mode.AUTO
    client_id: str = ""
    client_secret: str = ""
    callers: tuple[Client, ...] = ()
    cache_ttl: float = 10.0
    oracle_scope: str = "patient/ImagingStudy.read"
    timeout: float = 10.0
