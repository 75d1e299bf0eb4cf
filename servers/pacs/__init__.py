"""The PACS role: a DICOMweb origin server (QIDO-RS, WADO-RS, STOW-RS; PS3.18) on an embedded store."""
