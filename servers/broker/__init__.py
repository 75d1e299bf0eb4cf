"""The FHIR Broker: FHIR ``ImagingStudy`` built from QIDO-RS, and a guarded DICOMweb pass-through.

Modules: :mod:`.settings` (configuration), :mod:`.authorizer` (the Authorizer protocol: remote RFC 7662
introspection, or in process), :mod:`.upstream` (the Upstream protocol) and :mod:`.dicomweb_upstream`
(its DICOMweb implementation, streaming through :mod:`.http1_stream`), :mod:`.ehr_client` and
:mod:`.patients` (FHIR Patient -> DICOM PatientID with the broker's own token), :mod:`.service` (the
domain: searches, ownership checks, QIDO filtering), :mod:`.rewrite` (URLs in DICOM JSON answers),
:mod:`.audit` (the audit trail), :mod:`.cache` (short-lived facts), :mod:`.guard`,
:mod:`.fhir_handlers` and :mod:`.dicomweb_handlers` (HTTP), :mod:`.context` and :mod:`.app` (wiring:
``make_app``, ``build_context``, ``broker_routes``), :mod:`.command` (CLI). See ``docs/broker.md``.
"""
