"""The EHR's FHIR R4 API: the Sync for Science calls over a SQLite resource store.

Modules: :mod:`.instants` (FHIR date/dateTime/instant values as time ranges), :mod:`.searchparams` (the
R4 search parameters this server supports, per resource type, with how to index them),
:mod:`.query` (parsing a search request, FHIR R4 3.1.1), :mod:`.store` (SQLite store and search),
:mod:`.access` (SMART scope and patient-compartment decisions), :mod:`.capability` (the
CapabilityStatement), :mod:`.negotiation` (JSON-only content negotiation), :mod:`.handlers` (HTTP),
:mod:`.routes` (the URL rules the EHR app mounts). Decisions: ``docs/ehr-fhir.md``.
"""
