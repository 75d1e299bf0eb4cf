"""Reference servers for every role of the imaging-research exchange: EHR, introspection, broker, PACS."""
