"""The Token Introspection Service: an RFC 7662 endpoint for resource servers (the FHIR broker) that
cannot check the EHR's opaque tokens themselves.

Modules: :mod:`.settings`, :mod:`.deciders` (how an answer is found: relay to the EHR's introspection
endpoint, or use the EHR's FHIR API as the oracle), :mod:`.callers` (who may ask), :mod:`.handlers`
(``POST /introspect``), :mod:`.app` (``make_app``), :mod:`.command` (CLI).
"""
