"""The deterministic synthetic data set of the demo stack.

:mod:`servers.demo_data.plan` is the one source of truth: patients, demo users and, per patient, the
imaging studies (UIDs, dates, modalities, series, instance counts). The PACS's DICOM files
(:mod:`servers.demo_data.dicom`) and the EHR's FHIR resources (:mod:`servers.demo_data.clinical`) are both
generated from it, so the two sides always agree.
"""
