"""A recording, fault-injecting HTTP proxy for the kit's tests (a stand-in for a busy or odd server).

It forwards every GET to ``upstream`` (prefix replaced) with Tornado's HTTP client and records what the
kit sent (path, whether an ``Authorization`` header came along), how many requests were in flight at once,
and answers the first ``fail_first`` requests whose path matches ``fail_pattern`` (by default WADO-RS
retrievals) with ``fail_status`` (``503``) and ``Retry-After``. In front of a FHIR server
(``make_proxy(state, "fhir")``, ``forward_auth``) it passes the bearer token on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest


@dataclass
class ProxyState:
    upstream: str
    fail_first: int = 0
    retry_after: str = "1"
    seen: list[tuple[str, bool]] = field(default_factory=list)  # (path, had Authorization)
    in_flight: int = 0
    max_in_flight: int = 0
    failed: int = 0
    garbage: bool = False  # answer retrievals with a well-formed multipart body whose part is not DICOM
    rewrite: dict[str, str] = field(default_factory=dict)  # WADO-RS path substitutions
    fail_pattern: str = r"/(series|instances)/[^/]+$"  # which requests fail_first applies to
    fail_status: int = 503
    forward_auth: bool = False  # pass Authorization upstream (a FHIR server behind the proxy)
    drop_last_part: bool = False  # WADO-RS answers lose their last part (a server that sends too few)


class ProxyHandler(tornado.web.RequestHandler):
    def initialize(self, state: ProxyState) -> None:
        self.state = state

    async def get(self, path: str) -> None:
        st = self.state
        st.seen.append((path, "Authorization" in self.request.headers))
        if re.search(st.fail_pattern, "/" + path) and st.failed < st.fail_first:
            st.failed += 1
            self.set_status(st.fail_status)
            self.set_header("Retry-After", st.retry_after)
            self.finish("busy")
            return
        if st.garbage and re.search(r"/(series|instances)/[^/]+$", path):
            self.set_header("Content-Type", 'multipart/related; type="application/dicom"; boundary=xyz')
            self.finish(b"--xyz\r\nContent-Type: application/dicom\r\n\r\nnot a DICOM file\r\n--xyz--\r\n")
            return
        if re.search(r"/(series|instances)/[^/]+$", path):  # WADO-RS only; QIDO-RS answers stay right
            for old, new in st.rewrite.items():
                path = path.replace(old, new)
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            passed = ("accept", "authorization") if st.forward_auth else ("accept",)
            headers = {k: v for k, v in self.request.headers.items() if k.lower() in passed}
            url = f"{st.upstream}/{path}" + (f"?{self.request.query}" if self.request.query else "")
            response = await AsyncHTTPClient().fetch(HTTPRequest(url, headers=headers, request_timeout=60),
                                                     raise_error=False)
            self.set_status(response.code)
            for name in ("Content-Type", "Retry-After"):
                if name in response.headers:
                    self.set_header(name, response.headers[name])
            body = response.body or b""
            if st.drop_last_part and re.search(r"/(series|instances)/[^/]+$", path):
                body = _without_last_part(body, response.headers.get("Content-Type", ""))
            self.finish(body)
        finally:
            st.in_flight -= 1


def _without_last_part(body: bytes, content_type: str) -> bytes:
    """A multipart body without its last part (unchanged if it has only one)."""
    boundary = re.search(r"boundary=\"?([^\";]+)", content_type)
    if boundary is None:
        return body
    delimiter = b"\r\n--" + boundary.group(1).encode()
    close = body.rfind(delimiter + b"--")
    last = body.rfind(delimiter, 0, close)
    return body if last < 0 else body[:last] + body[close:]


def make_proxy(state: ProxyState, prefix: str = "dicom-web") -> tornado.web.Application:
    return tornado.web.Application([(rf"/{prefix}/(.*)", ProxyHandler, {"state": state})])
