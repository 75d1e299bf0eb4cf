"""The EHR role: a SMART on FHIR authorization server (:mod:`servers.ehr.oauth`) and a FHIR R4 API
(:mod:`servers.ehr.fhir`), built together by :func:`servers.ehr.app.make_app`."""
