"""Content negotiation for WADO-RS (PS3.18 8.7: Accept header, media types, transfer syntaxes).

An Accept header is a comma-separated list of media ranges with parameters and ``q`` weights; for
DICOMweb, ``multipart/related; type="application/dicom"; transfer-syntax=...`` names the part type and
the transfer syntax (PS3.18 8.7.3.5). When no transfer syntax is named, the default is Explicit VR Little
Endian for ``application/dicom`` and for uncompressed bulk data (PS3.18 Table 8.7.3-2/-3); ``*`` asks
for the stored syntax (PS3.18 8.7.3.5.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from s4s_jupyter.core.multipart import parse_content_type

#: syntaxes this server can produce from any stored object whose pixel data it can decode
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
AS_STORED = "*"


@dataclass(frozen=True)
class MediaRange:
    """One item of an Accept header: the media type, the multipart part type, the transfer syntax."""

    media_type: str  # e.g. "multipart/related", "application/dicom+json", "*/*"
    part_type: str  # for multipart/related: the ``type`` parameter ("" when absent)
    transfer_syntax: str | None  # None: not given (the default applies)
    q: float


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, best first (``*/*`` when the header is absent or empty)."""
    if not header or not header.strip():
        return [MediaRange("*/*", "", None, 1.0)]
    out: list[tuple[float, int, MediaRange]] = []
    for n, item in enumerate(_split(header)):
        if not item.strip():
            continue
        media, params = parse_content_type(item.strip())
        if not media:
            continue
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 0.0
        if q <= 0:
            continue
        ts = params.get("transfer-syntax")
        out.append((q, n, MediaRange(media, params.get("type", "").lower(), ts, q)))
    out.sort(key=lambda t: (-t[0], t[1]))
    return [m for _, _, m in out]


def _split(header: str) -> list[str]:
    """Split on commas outside quoted strings (``type="a, b"`` is unusual but legal)."""
    items: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    items.append("".join(buf))
    return items


def can_decode(ts: str) -> bool:
    """Whether pixel data stored in ``ts`` can be decoded here (pydicom plus installed plugins)."""
    uid = UID(ts)
    if not uid.is_encapsulated:
        return True
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(uid).is_available)
    except Exception:
        return False


def can_serve(stored: str, wanted: str) -> bool:
    """Whether an object stored in ``stored`` can be sent in ``wanted`` (``*`` = as stored)."""
    if wanted in (AS_STORED, stored):
        return True
    if wanted in NATIVE_SYNTAXES:
        if stored == "1.2.840.10008.1.2.2":  # retired big endian: pydicom does not swap pixel data
            return False
        return can_decode(stored)  # deflated files are inflated by pydicom as they are read
    return False


def choose_dicom_syntax(accept: list[MediaRange], stored: set[str]) -> tuple[str, bool] | None:
    """The transfer syntax to send DICOM objects in (``*`` for as stored) and whether the client named
    it (False: the default applied), or None (406).

    Accepted: ``multipart/related; type="application/dicom"`` (PS3.18 10.4.1.1.1), ``application/dicom``
    (answered as multipart too, one part per instance), ``multipart/related`` without type, ``*/*``.
    """
    for m in accept:
        ok_type = (m.media_type == "multipart/related" and m.part_type in ("application/dicom", "", "*/*")) \
            or m.media_type in ("application/dicom", "*/*", "multipart/*")
        if not ok_type:
            continue
        wanted = m.transfer_syntax or str(ExplicitVRLittleEndian)
        if all(can_serve(s, wanted) for s in stored):
            return wanted, m.transfer_syntax is not None
    return None


def choose_frame_syntax(accept: list[MediaRange], stored: str) -> str | None:
    """Transfer syntax for frames / pixel bulk data (PS3.18 8.7.3.3.2): ``*`` or the stored one sends
    the stored bytes; Explicit VR Little Endian (the default) sends native pixels; None means 406."""
    for m in accept:
        ok_type = (m.media_type == "multipart/related" and m.part_type in (
            "application/octet-stream", "", "*/*")) or m.media_type in (
            "application/octet-stream", "*/*", "multipart/*")
        if not ok_type:
            continue
        wanted = m.transfer_syntax or str(ExplicitVRLittleEndian)
        if wanted in (AS_STORED, stored):
            return AS_STORED
        if wanted in NATIVE_SYNTAXES and can_serve(stored, wanted):
            return str(ExplicitVRLittleEndian)
    return None


def choose_json(accept: list[MediaRange]) -> bool:
    """Whether a DICOM JSON answer (``application/dicom+json``) is acceptable (PS3.18 8.7.3.2)."""
    return any(m.media_type in ("application/dicom+json", "application/json", "*/*", "application/*")
               for m in accept)


def choose_image(accept: list[MediaRange]) -> str | None:
    """``image/jpeg`` (the default) or ``image/png`` for rendered resources (PS3.18 8.7.4), or None."""
    for m in accept:
        if m.media_type in ("image/jpeg", "image/png"):
            return m.media_type
        if m.media_type in ("*/*", "image/*"):
            return "image/jpeg"
        if m.media_type == "multipart/related" and m.part_type in ("image/jpeg", "image/png"):
            return m.part_type
    return None
