"""The bulk-download transport of the retrieval engine: urllib3, with httpx's authentication protocol.

Why not httpx here, when the rest of the kit uses it: a WADO-RS download is hundreds of megabytes through
one code path, and per byte httpx costs about twice the CPU of urllib3. httpx reads 64 KiB at a time and
passes every read through h11's event machinery, copying it twice on the way; urllib3 reads through
``http.client``'s buffered socket in chunks of the size asked for. On the 2-core machine this project is
measured on (client and server sharing it), that CPU is the download's speed: reading a 126 MB study
took 0.11 s of CPU with httpx and 0.05 s with urllib3 (``benchmarks/bench_kit.py``; docs/kit.md).

Authentication stays one thing for the whole kit: any :class:`httpx.Auth` (the session's
:class:`~s4s_jupyter.client.auth.BearerAuth`, which refreshes and retries after a 401) is driven through
its public ``sync_auth_flow`` generator, each request it yields sent with urllib3. Proxies come from the
environment as httpx and requests take them (``HTTP(S)_PROXY``, ``NO_PROXY``), and so do the certificate
authorities for TLS: ``SSL_CERT_FILE`` when set, else certifi's bundle (httpx's default).
"""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx
import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

#: what a failed connection or a broken answer raises (retried by the caller); urllib3 wraps socket and
#: ``http.client`` errors in these, so a local ``OSError`` (a full disk) is not mistaken for one
TransportError = Urllib3Error
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (TransportError,)

Response = urllib3.BaseHTTPResponse


class StreamingHTTP:
    """GET requests whose answers are read as streams; connections kept per host (``maxsize``)."""

    def __init__(self, *, timeout: float, connect_timeout: float = 30.0, maxsize: int = 4) -> None:
        import certifi

        self.timeout = urllib3.Timeout(connect=connect_timeout, read=timeout)
        self._options = {"maxsize": maxsize, "block": False, "retries": False, "timeout": self.timeout,
                         "ca_certs": os.environ.get("SSL_CERT_FILE") or certifi.where()}
        self._direct = urllib3.PoolManager(**self._options)  # type: ignore[arg-type]
        self._proxied: dict[str, urllib3.ProxyManager] = {}
        self._lock = threading.Lock()

    def _manager(self, url: str) -> urllib3.PoolManager:
        parts = urlsplit(url)
        proxy = urllib.request.getproxies().get(parts.scheme)
        if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
            return self._direct
        with self._lock:
            if proxy not in self._proxied:
                self._proxied[proxy] = urllib3.ProxyManager(proxy, **self._options)  # type: ignore[arg-type]
            return self._proxied[proxy]

    def _send(self, url: str, headers: Mapping[str, str]) -> Response:
        return self._manager(url).request("GET", url, headers=dict(headers), preload_content=False,
                                          redirect=False, retries=False, timeout=self.timeout)

    def get(self, url: str, headers: Mapping[str, str], auth: httpx.Auth | None = None) -> Response:
        """``GET url``; the answer's body is not read yet (``stream()``, ``read()``; then :func:`done`).

        With ``auth``, the request goes through its flow: a request it sends again (a 401 answered by a
        refreshed token) is sent again here, after the earlier answer was read and released.
        """
        if auth is None:
            return self._send(url, headers)
        flow = auth.sync_auth_flow(httpx.Request("GET", url, headers=headers))
        request = next(flow)
        while True:
            sent = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            response = self._send(str(request.url), sent)
            content = response.read() if response.status >= 300 else b""
            try:
                request = flow.send(httpx.Response(response.status, headers=list(response.headers.items()),
                                                   content=content, request=request))
            except StopIteration:
                if content:  # the body was read for the flow: keep it readable for the caller
                    return _Replayed(response, content)
                return response
            done(response)

    def close(self) -> None:
        self._direct.clear()
        for manager in self._proxied.values():
            manager.clear()


class _Replayed(urllib3.HTTPResponse):
    """An error answer whose body the authentication flow already read."""

    def __init__(self, original: Response, body: bytes) -> None:
        super().__init__(body=body, headers=original.headers, status=original.status,
                         preload_content=True)
        done(original)


def done(response: Response, complete: bool = True) -> None:
    """Give the connection back for reuse (``complete``: the body was read to its end), else close it."""
    if complete:
        try:
            response.drain_conn()
        except TRANSPORT_ERRORS:
            response.close()
            return
        response.release_conn()
    else:
        response.close()
        response.release_conn()
