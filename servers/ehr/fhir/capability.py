"""The CapabilityStatement at ``GET [base]/metadata`` (FHIR R4 3.1.0.11 "capabilities"; SMART App Launch
2.x "Conformance": the ``oauth-uris`` security extension and the ``SMART-on-FHIR`` security service)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from servers.ehr.fhir.searchparams import COMMON, RESOURCE_TYPES, params_for

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
#: fixed publication date of this server's capabilities (not the wall clock: answers are reproducible)
PUBLISHED = "2026-06-01"


def capability_statement(fhir_base: str, oauth_urls: Mapping[str, str],
                         extra_resources: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The R4 CapabilityStatement of the EHR's FHIR API; ``extra_resources`` are ``rest.resource``
    entries of handlers mounted beside it (the broker's ImagingStudy and Endpoint, servers/ehr/imaging.py).
    """
    security_ext = {
        "url": OAUTH_URIS,
        "extension": [{"url": key, "valueUri": oauth_urls[key]}
                      for key in ("authorize", "token", "introspect", "revoke") if key in oauth_urls],
    }
    resources: list[dict[str, Any]] = []
    for rtype in RESOURCE_TYPES:
        params = params_for(rtype)
        resources.append({
            "type": rtype,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "versioning": "no-version",
            "readHistory": False,
            "updateCreate": False,
            "searchParam": [
                {"name": p.name, "type": "token" if p.type == "id" else str(p.type),
                 "documentation": p.documentation}
                for p in params.values()
            ],
        })
    resources += [dict(r) for r in extra_resources]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": PUBLISHED,
        "publisher": "s4s-jupyter",
        "kind": "instance",
        "software": {"name": "s4s-jupyter demo EHR"},
        "implementation": {"description": "Sync for Science FHIR R4 API of the s4s-jupyter demo EHR",
                           "url": fhir_base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Read-only. Every interaction but this one needs a SMART bearer token; see the "
                             "project's docs/ehr-fhir.md.",
            "security": {
                "extension": [security_ext],
                "cors": False,
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}],
                    "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"}],
            },
            "resource": resources,
            "searchParam": [{"name": p.name, "type": "token" if p.type == "id" else str(p.type),
                             "documentation": p.documentation} for p in COMMON],
        }],
    }
