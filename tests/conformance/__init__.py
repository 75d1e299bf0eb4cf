"""DICOMweb conformance: our PACS side by side with Orthanc's DICOMweb plugin (PS3.18)."""
