"""The kit's engine: SMART login, FHIR searches into pandas, ImagingStudy search, WADO-RS retrieval.

Start with :func:`s4s_jupyter.connect` (an EHR) or :class:`s4s_jupyter.DICOMweb` (a DICOMweb server used
directly). Submodules are imported when first used.
"""
