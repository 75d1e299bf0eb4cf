"""The EHR playing the broker's role itself (issue 4): configured with a PACS (``EHRSettings.pacs_url``,
``s4s-servers ehr --pacs URL``), it mounts the FHIR Broker's handlers under its own FHIR base.

- ``GET {ehr}/fhir/ImagingStudy`` (search, read) and ``{ehr}/fhir/Endpoint/{id}``, built from QIDO-RS;
- WADO-RS / QIDO-RS at ``{ehr}/dicom-web``, every request re-authorized (the broker's guard);
- tokens are checked by the EHR's own in-process
  :class:`~servers.ehr.oauth.introspector.TokenIntrospector` (no HTTP introspection, no broker
  credentials), and the FHIR patient -> DICOM PatientID lookup reads the EHR's own FHIR store.

The routes must come before the EHR's generic ``/fhir/{type}`` rules (Tornado takes the first match).
The CapabilityStatement then lists ImagingStudy and Endpoint with the broker's search parameters (SMART
Imaging Access, "Discovery"); ``/metadata`` and the SMART configuration stay the EHR's
(``broker_routes(..., discovery=False)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from servers.broker.app import broker_routes, build_context, quiet_httpx
from servers.broker.authorizer import InProcessAuthorizer
from servers.broker.fhir_handlers import capability_resources
from servers.broker.patients import IdentifierRule, InProcessPatientDirectory
from servers.broker.settings import DICOMWEB_PATH, BrokerSettings
from servers.ehr.fhir.capability import capability_statement
from servers.ehr.fhir.handlers import MetadataHandler
from servers.ehr.fhir.store import FHIRStore
from servers.ehr.oauth.introspector import TokenIntrospector
from servers.ehr.settings import EHRSettings

#: the EHR's FHIR base path (the broker's FHIR handlers mount under it)
FHIR_PATH = "/fhir"


class ImagingMetadataHandler(MetadataHandler):
    """The EHR's CapabilityStatement with the broker's ImagingStudy and Endpoint entries."""

    async def get(self) -> None:
        self.negotiate(self.query_args())
        self.write_fhir(capability_statement(self.fhir_base, self.oauth_urls,
                                             extra_resources=capability_resources()), private=False)


@dataclass(frozen=True)
class ImagingMount:
    """The mounted broker: its URL rules (to go before the EHR's FHIR rules) and its cleanups."""

    routes: list[tuple[str, type, dict[str, Any]]]
    cleanups: list[Any]
    dicomweb_base: str


def mount_imaging(settings: EHRSettings, base_url: str, introspector: TokenIntrospector,
                  store: FHIRStore) -> ImagingMount:
    """The broker's handlers for the EHR served at ``base_url``, upstream ``settings.pacs_url``."""
    if not settings.pacs_url:
        raise ValueError("mounting the imaging handlers needs the PACS's DICOMweb URL")
    quiet_httpx()
    broker_settings = BrokerSettings(
        pacs_url=settings.pacs_url.rstrip("/"),
        ehr_fhir="",  # nothing is read from the EHR over HTTP: the store and introspector are here
        patient_identifier=settings.pacs_patient_identifier,
        data_dir=settings.ehr_dir / "imaging",  # audit.jsonl of searches and retrievals
    )
    patients = InProcessPatientDirectory(lambda pid: store.read("Patient", pid),
                                         IdentifierRule(settings.pacs_patient_identifier))
    ctx, cleanups = build_context(broker_settings, base_url, authorizer=InProcessAuthorizer(introspector),
                                  patients=patients, fhir_path=FHIR_PATH, dicomweb_path=DICOMWEB_PATH)
    return ImagingMount(broker_routes(ctx, discovery=False), cleanups, ctx.dicomweb_base)
