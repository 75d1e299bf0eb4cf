"""Base request handlers: each server translates the project's errors to HTTP in exactly one place.

- :class:`FHIRHandler`: FHIR errors as OperationOutcome (``application/fhir+json``).
- :class:`OAuthHandler`: OAuth errors as RFC 6749 5.2 JSON, ``Cache-Control: no-store``; 401 for a bad
  bearer token with ``WWW-Authenticate: Bearer`` (RFC 6750 3).
- :class:`DICOMwebHandler`: DICOMweb errors as status code plus a JSON status report (PS3.18 8.6).

Unexpected exceptions become a 500 in the same form, without a traceback on the wire. Query strings
are never logged (they may carry codes, state or, refused but still sent, tokens).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import tornado.web

from s4s_jupyter.core.errors import (
    DICOMwebError,
    FHIRError,
    FHIRForbidden,
    InvalidToken,
    OAuthError,
    S4SError,
    UpstreamError,
)

log = logging.getLogger("s4s.http")

FHIR_JSON = "application/fhir+json; charset=utf-8"


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado ``log_function``: method, path without the query string, status, time."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    ms = 1000.0 * handler.request.request_time()
    log.log(level, "%d %s %s %.1fms", status, handler.request.method, handler.request.path, ms)


class BaseHandler(tornado.web.RequestHandler):
    """Shared behaviour: no Server header details, JSON helpers, error translation hook."""

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_json(self, data: Any, *, status: int = 200, content_type: str = "application/json") -> None:
        self.set_status(status)
        self.set_header("Content-Type", content_type)
        self.finish(json.dumps(data, separators=(",", ":")))

    def error_from(self, kwargs: dict[str, Any]) -> BaseException | None:
        exc_info = kwargs.get("exc_info")
        return exc_info[1] if exc_info else None

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, S4SError | tornado.web.HTTPError):
            log.info("%s %s -> %s", self.request.method, self.request.path, value)
        else:
            log.error("unexpected error in %s %s", self.request.method, self.request.path,
                      exc_info=(typ, value, tb))


class FHIRHandler(BaseHandler):
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = self.error_from(kwargs)
        if isinstance(exc, InvalidToken):
            self.set_header("WWW-Authenticate", exc.www_authenticate())
            err = FHIRError(exc.message, status=401, code="login")
        elif isinstance(exc, OAuthError):
            err = FHIRError(exc.message, status=exc.status, code="security")
        elif isinstance(exc, FHIRError):
            err = exc
            if isinstance(exc, FHIRForbidden):  # RFC 6750 3.1
                self.set_header("WWW-Authenticate", 'Bearer realm="s4s", error="insufficient_scope"')
        elif isinstance(exc, UpstreamError):
            if exc.retry_after:
                self.set_header("Retry-After", exc.retry_after)
            err = FHIRError(exc.message, status=exc.status, code="transient" if exc.status == 503 else
                            "timeout" if exc.status == 504 else "exception")
        elif isinstance(exc, tornado.web.HTTPError):
            err = FHIRError(exc.log_message or self._reason, status=status_code,
                            code="not-found" if status_code == 404 else
                            "not-supported" if status_code in (405, 406, 415) else "processing")
        else:
            err = FHIRError("internal server error", status=500, code="exception")
        self.set_status(err.status)
        self.set_header("Content-Type", FHIR_JSON)
        self.finish(json.dumps(err.operation_outcome()))


class OAuthHandler(BaseHandler):
    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")
        self.set_header("Pragma", "no-cache")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = self.error_from(kwargs)
        if isinstance(exc, InvalidToken):
            self.set_header("WWW-Authenticate", exc.www_authenticate())
        if isinstance(exc, OAuthError):
            err = exc
        elif isinstance(exc, tornado.web.HTTPError):
            err = OAuthError(exc.log_message or self._reason, status=status_code,
                             error="invalid_request" if status_code < 500 else "server_error")
        else:
            err = OAuthError("internal server error", error="server_error", status=500)
        self.set_status(err.status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(err.body()))


class DICOMwebHandler(BaseHandler):
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = self.error_from(kwargs)
        if isinstance(exc, InvalidToken):
            self.set_header("WWW-Authenticate", exc.www_authenticate())
            err: S4SError = exc
        elif isinstance(exc, UpstreamError):
            if exc.retry_after:
                self.set_header("Retry-After", exc.retry_after)
            err = exc
        elif isinstance(exc, S4SError):
            err = exc
        elif isinstance(exc, tornado.web.HTTPError):
            err = DICOMwebError(exc.log_message or self._reason, status=status_code)
        else:
            err = DICOMwebError("internal server error", status=500)
        self.set_status(err.status)
        self.set_header("Content-Type", "application/json")
        body = err.status_report() if isinstance(err, DICOMwebError) else {
            "status": err.status, "message": err.message}
        self.finish(json.dumps(body))
