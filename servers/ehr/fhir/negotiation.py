"""JSON-only content negotiation (FHIR R4 3.1.0.1.10 "Content Types and encodings"; RFC 9110 12.5.1).

The server speaks ``application/fhir+json``; ``application/json`` and ``_format=json`` are accepted too.
An ``Accept`` header or ``_format`` that admits no JSON answer is refused with 406; a request body that is
not of the expected type with 415.
"""

from __future__ import annotations

from s4s_jupyter.core.errors import FHIRError

#: what the server answers with
FHIR_JSON = "application/fhir+json"
JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})
_ACCEPTABLE = frozenset({"*/*", "application/*", "application/json", "application/fhir+json",
                         "application/json+fhir"})


def _media_ranges(header: str) -> list[tuple[str, float]]:
    out = []
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        q = 1.0
        for f in fields[1:]:
            name, _, value = f.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        out.append((fields[0].lower(), q))
    return out


def check_acceptable(accept: str | None, formats: list[str]) -> None:
    """Raise 406 unless the request admits a JSON answer. ``_format`` overrides ``Accept`` (R4 3.1.0.1.10)."""
    if formats:
        fmt = formats[-1].split(";")[0].strip().lower()
        if fmt not in JSON_FORMATS:
            raise FHIRError(f"_format {formats[-1]!r} is not supported: this server speaks JSON only",
                            status=406, code="not-supported")
        return
    if not accept or not accept.strip():
        return
    if not any(q > 0 and media in _ACCEPTABLE for media, q in _media_ranges(accept)):
        raise FHIRError("the Accept header admits no JSON answer (application/fhir+json)", status=406,
                        code="not-supported")


def check_body_type(content_type: str | None, expected: frozenset[str]) -> None:
    """Raise 415 unless the body's media type is one of ``expected``."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in expected:
        raise FHIRError(f"unsupported media type {media or '(none)'!r}; expected one of "
                        f"{', '.join(sorted(expected))}", status=415, code="not-supported")
