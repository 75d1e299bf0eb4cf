"""Everything the broker's handlers share, built once per broker (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from servers.broker.audit import AuditTrail
from servers.broker.authorizer import Authorizer
from servers.broker.ehr_client import EHRClient
from servers.broker.local_pacs import LocalPACS
from servers.broker.service import ImagingService
from servers.broker.settings import BrokerSettings


@dataclass
class BrokerContext:
    settings: BrokerSettings
    service: ImagingService
    authorizer: Authorizer
    audit: AuditTrail
    #: the EHR (its SMART configuration); None when the broker is mounted in the EHR
    ehr: EHRClient | None
    #: public URLs: the FHIR base and the DICOMweb (WADO-RS) base the Endpoint names
    fhir_base: str
    dicomweb_base: str
    endpoint: dict[str, Any]
    #: URL path prefix of the DICOMweb routes (``/dicom-web``, or where the EHR mounts them)
    dicomweb_path: str
    #: our PACS's application on its store, for retrieves answered in this process (``pacs_store``)
    local_pacs: LocalPACS | None = None
