"""Settings of the FHIR Broker, one frozen value object handed to :func:`servers.broker.app.make_app`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timezone
from pathlib import Path

#: URL path prefixes of the broker's two APIs: ``{broker}/fhir`` and ``{broker}/dicom-web``.
FHIR_PATH = "/fhir"
DICOMWEB_PATH = "/dicom-web"
#: The FHIR R4 ``identifier`` type the EHR gives the DICOM PatientID (v2-0203 MR, "medical record number").
MR_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203|MR"


@dataclass(frozen=True)
class BrokerSettings:
    """What the broker needs to run.

    - ``pacs_url``: the upstream PACS's DICOMweb base (``.../dicom-web``); ``pacs_socket``: a Unix-domain
      socket the PACS listens on (same host), used instead of the URL's host and port (plain HTTP);
      ``pacs_handoff``: the PACS's handoff socket (:mod:`servers.handoff`): retrieves the broker passes
      through unchanged are answered by the PACS on the client's own connection; ``pacs_store``: our
      PACS's data folder on the same host: those retrieves are answered in the broker's own process,
      from that store (:mod:`servers.broker.local_pacs`).
    - ``ehr_fhir``: the EHR's FHIR base; Patient resources (for the PatientID) are read there, and its
      ``.well-known/smart-configuration`` is what the broker's own one points at.
    - ``introspection_url``: an RFC 7662 endpoint (the introspection service, or the EHR's own);
      ``client_id``/``client_secret``: the broker's confidential client at the EHR, used for
      introspection (client_secret_basic) and for its own client_credentials token.
    - ``patient_identifier``: which ``Patient.identifier`` is the DICOM PatientID: ``type:SYSTEM|CODE``
      (a coding of ``identifier.type``, default v2-0203 MR) or ``system:URI`` (``identifier.system``).
    - ``data_dir``: folder of the audit trail (``audit.jsonl``); None logs only.
    - ``upstream_timeout``: seconds to wait for the PACS to connect / answer / send the next chunk.
    - ``owner_cache_ttl``: seconds a study's PatientID (from QIDO) is reused; ``patient_cache_ttl``: the
      same for FHIR patient -> PatientID; ``introspection_cache_ttl``: seconds a positive introspection
      answer is reused, never past the token's ``exp`` (0: introspect every request). A revocation at the
      EHR is seen at the broker within this TTL plus the introspection service's own.
    - ``upstream_authorization``: an ``Authorization`` header value for the PACS (never the user's).
    - ``mapping_tz``: zone of DICOM StudyDate/StudyTime when the PACS gives no offset.
    - ``max_metadata_bytes``: metadata/QIDO answers are read whole to rewrite URLs; larger ones are 502.
    """

    pacs_url: str
    ehr_fhir: str
    introspection_url: str | None = None
    pacs_socket: str | None = None
    pacs_handoff: str | None = None
    pacs_store: Path | None = None
    client_id: str = ""
    client_secret: str = ""
    patient_identifier: str = f"type:{MR_TYPE}"
    data_dir: Path | None = None
    upstream_timeout: float = 30.0
    owner_cache_ttl: float = 30.0
    patient_cache_ttl: float = 300.0
    introspection_cache_ttl: float = 5.0
    upstream_authorization: str | None = None
    mapping_tz: timezone = UTC
    endpoint_id: str = "wado-rs"
    default_page_size: int = 50
    max_page_size: int = 500
    max_metadata_bytes: int = 256 * 1024 * 1024
