"""URLs in DICOM JSON answers point at the broker, never at the PACS (PS3.18 F.2.6 BulkDataURI,
Retrieve URL (0008,1190), and the ``Content-Location`` header).

An absolute URL under the PACS's DICOMweb base path is moved under the broker's public DICOMweb base;
a relative one is left alone (it resolves against the broker's own URL); an absolute URL anywhere
else would send the client to a server the broker does not guard, so it is removed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from s4s_jupyter.core.dicomjson import DicomJSON


class URLRewriter:
    def __init__(self, upstream_base: str, public_base: str) -> None:
        self.upstream_path = urlsplit(upstream_base).path.rstrip("/")
        self.public_base = public_base.rstrip("/")

    def url(self, url: str) -> str | None:
        """The broker's URL for ``url``, ``url`` itself when relative, None when it points elsewhere."""
        parts = urlsplit(url)
        if not parts.scheme and not parts.netloc:
            return url
        path = parts.path
        if path != self.upstream_path and not path.startswith(self.upstream_path + "/"):
            return None
        out = self.public_base + path[len(self.upstream_path):]
        return out + ("?" + parts.query if parts.query else "")

    def dataset(self, obj: DicomJSON) -> DicomJSON:
        """Rewrite one DICOM JSON object in place (and return it): BulkDataURI, UR values, sequences."""
        for tag in list(obj):
            element = obj[tag]
            if not isinstance(element, dict):
                continue
            uri = element.get("BulkDataURI")
            if isinstance(uri, str):
                new = self.url(uri)
                if new is None:
                    del obj[tag]
                    continue
                element["BulkDataURI"] = new
            vr = element.get("vr")
            vals = element.get("Value")
            if not isinstance(vals, list):
                continue
            if vr == "UR":
                kept = [self.url(v) if isinstance(v, str) else None for v in vals]
                element["Value"] = [v for v in kept if v is not None]
                if not element["Value"]:
                    del element["Value"]
            elif vr == "SQ":
                for item in vals:
                    if isinstance(item, dict):
                        self.dataset(item)
        return obj

    def datasets(self, objs: list[DicomJSON]) -> list[DicomJSON]:
        for obj in objs:
            self.dataset(obj)
        return objs

    def header(self, value: Any) -> str | None:
        return self.url(value) if isinstance(value, str) else None
