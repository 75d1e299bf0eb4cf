"""The DICOMweb implementation of the broker's :class:`~servers.broker.upstream.Upstream`.

Two HTTP clients, each where it is better:

- QIDO-RS and metadata (small JSON answers, read whole to filter and rewrite): httpx's ``AsyncClient``,
  for its connection pool, per-phase timeouts and simple API;
- WADO-RS retrieves (gigabytes, streamed): a small HTTP/1.1 reader on a Tornado ``IOStream``
  (:mod:`servers.broker.http1_stream`), measured twice as fast as httpx's ``aiter_raw`` here, with
  back-pressure (the next chunk is read from the PACS only after the client took the previous one)
  and an idle timeout per chunk.

The user's token never goes upstream: requests carry only ``Accept``, ``Accept-Encoding: identity``
(so bodies pass through byte for byte and JSON can be rewritten) and the broker's own optional
``Authorization`` for the PACS. Hop-by-hop headers (RFC 9110 7.6.1) are dropped from answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from tornado.httputil import HTTPHeaders

from s4s_jupyter.core.errors import DICOMwebError, UpstreamError
from servers.broker.http1_stream import StreamedResponse, open_get
from servers.broker.upstream import DicomJSON, QueryLevel

#: RFC 9110 7.6.1 hop-by-hop fields (plus the ones a proxy must not pass on), never forwarded.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "proxy-connection"})
#: end-to-end answer headers handed to the client (anything else, e.g. Set-Cookie or Server, is not)
PASSED_HEADERS = frozenset({"content-type", "content-length", "content-location", "content-language",
                            "content-disposition", "etag", "last-modified", "warning", "cache-control"})


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing: a PACS's Set-Cookie must not ride along on the next user's
    request through the shared client."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def end_to_end_headers(headers: HTTPHeaders) -> dict[str, str]:
    """The answer headers the broker passes on: the allow-list, minus hop-by-hop and Connection-named."""
    named = {t.strip().lower() for v in headers.get_list("Connection") for t in v.split(",") if t.strip()}
    drop = HOP_BY_HOP | named
    return {k.lower(): v for k, v in headers.get_all()
            if k.lower() in PASSED_HEADERS and k.lower() not in drop}


def _error_for_status(status: int, retry_after: str | None, what: str) -> UpstreamError | DICOMwebError:
    if status == 503:
        return UpstreamError(f"the PACS is unavailable ({what})", status=503, retry_after=retry_after)
    if status == 504:
        return UpstreamError(f"the PACS timed out ({what})", status=504)
    if status >= 500 or status in (401, 403, 407):
        # 401/403 here are the PACS refusing the broker itself: a gateway problem, not the user's
        return UpstreamError(f"the PACS answered {status} ({what})", status=502)
    if status == 404:
        return DICOMwebError("not found", status=404)
    return DICOMwebError(f"the PACS refused the request ({status})", status=status if status >= 400 else 502)


@dataclass
class _Stream:
    response: StreamedResponse
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)

    def iter_bytes(self) -> AsyncIterator[memoryview]:
        return self.response.iter_bytes()

    @property
    def spliceable(self) -> bool:
        return self.response.spliceable

    async def splice_to(self, fd: int) -> int:
        return await self.response.splice_to(fd)


class DICOMwebUpstream:
    """A DICOMweb PACS at ``base_url`` (its ``.../dicom-web`` base), reached over TCP, or over the
    Unix-domain socket ``unix_socket`` when the PACS listens on one on this host (the URL then gives
    only the paths and the ``Host`` header)."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, authorization: str | None = None,
                 max_json_bytes: int = 256 * 1024 * 1024, http: httpx.AsyncClient | None = None,
                 unix_socket: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_json_bytes = max_json_bytes
        self.unix_socket = unix_socket
        self._own_http = http is None
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), trust_env=False, follow_redirects=False, cookies=no_cookies(),
            transport=httpx.AsyncHTTPTransport(uds=unix_socket, limits=limits))
        self._auth = authorization
        self.timeout = timeout

    def request_head(self, path: str, params: Sequence[tuple[str, str]], accept: str | None,
                     keep_alive: bool) -> bytes:
        """The HTTP/1.1 head of the GET :meth:`retrieve` would send, for a connection handed to the PACS
        (:mod:`servers.handoff`): the same path, query and headers (the broker's own credential for the
        PACS, if any; never the user's token), and ``Connection: close`` unless ``keep_alive``."""
        base = urlsplit(self.base_url)
        target = f"{base.path}/{path}" + (f"?{urlencode(list(params))}" if params else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {base.netloc}"]
        if not keep_alive:
            lines.append("Connection: close")
        lines += [f"{name}: {value}" for name, value in self._headers(accept).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _headers(self, accept: str | None) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity"}
        if accept:
            headers["Accept"] = accept
        if self._auth:
            headers["Authorization"] = self._auth
        return headers

    @asynccontextmanager
    async def _open(self, path: str, params: Sequence[tuple[str, str]],
                    accept: str | None) -> AsyncIterator[httpx.Response]:
        request = self.http.build_request("GET", f"{self.base_url}/{path}", params=list(params),
                                          headers=self._headers(accept))
        try:
            response = await self.http.send(request, stream=True)
        except httpx.TimeoutException:
            raise UpstreamError("the PACS timed out", status=504) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the PACS cannot be reached or answered garbage ({type(exc).__name__})"
                                ) from None
        try:
            yield response
        finally:
            await response.aclose()

    @asynccontextmanager
    async def retrieve(self, path: str, params: Sequence[tuple[str, str]],
                       accept: str | None) -> AsyncIterator[_Stream]:
        """The streamed retrieve, on :mod:`servers.broker.http1_stream` (see there why not httpx)."""
        url = f"{self.base_url}/{path}" + (f"?{urlencode(list(params))}" if params else "")
        response = await open_get(url, self._headers(accept), timeout=self.timeout,
                                  unix_socket=self.unix_socket)
        try:
            if response.status >= 300:
                raise _error_for_status(response.status, response.headers.get("Retry-After"), "retrieve")
            yield _Stream(response, response.status, end_to_end_headers(response.headers))
        finally:
            response.close()

    async def _json(self, path: str, params: Sequence[tuple[str, str]], what: str) -> list[DicomJSON]:
        async with self._open(path, params, "application/dicom+json") as response:
            if response.status_code == 204:
                return []
            if response.status_code != 200:
                raise _error_for_status(response.status_code, response.headers.get("retry-after"), what)
            body = bytearray()
            try:
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > self.max_json_bytes:
                        raise UpstreamError(f"the PACS {what} answer is too large for the broker")
            except httpx.TimeoutException:
                raise UpstreamError(f"the PACS timed out ({what})", status=504) from None
            except httpx.HTTPError as exc:
                raise UpstreamError(f"the PACS {what} answer broke off ({type(exc).__name__})") from None
        if not body.strip():
            return []
        try:
            data: Any = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UpstreamError(f"the PACS answered a {what} that is not JSON") from None
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise UpstreamError(f"the PACS answered a {what} that is not a DICOM JSON array")
        return data

    async def query(self, level: QueryLevel, params: Sequence[tuple[str, str]], *,
                    study_uid: str | None = None, series_uid: str | None = None) -> list[DicomJSON]:
        path = ""
        if study_uid:
            path = f"studies/{study_uid}/"
            if series_uid:
                path += f"series/{series_uid}/"
        return await self._json(path + level.value, params, "QIDO-RS answer")

    async def metadata(self, path: str) -> list[DicomJSON]:
        return await self._json(path, (), "metadata")

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()
