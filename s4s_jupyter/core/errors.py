"""One exception hierarchy for the kit and the servers.

Every error carries what its protocol puts on the wire, so each server translates errors to HTTP in
exactly one place (its base handler's ``write_error``) and the kit raises the same types it reads back::

    S4SError
    ├── FHIRError            -> OperationOutcome (FHIR R4 3.1.0.5); .status, .code (issue-type), .severity
    │   ├── FHIRNotFound         404 not-found
    │   └── FHIRForbidden        403 forbidden
    ├── OAuthError           -> RFC 6749 5.2 error JSON; .error ("invalid_grant", ...), .status
    │   └── InvalidToken         401 + WWW-Authenticate: Bearer error="invalid_token" (RFC 6750 3.1)
    │       └── MissingToken         401 + WWW-Authenticate: Bearer, no error code: no credentials sent
    ├── DICOMwebError        -> status code + JSON status report (PS3.18 8.6); .status
    │   ├── InvalidUID           400, a UID breaking PS3.5 9.1
    │   └── UpstreamError        502/503/504 from an upstream server; .retry_after
    └── ClientError          raised by the kit when a server answers an error; .status, .body

The module imports nothing beyond the standard library.
"""

from __future__ import annotations

from typing import Any


class S4SError(Exception):
    """Base class of every error this project raises on purpose."""

    status: int = 500

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class FHIRError(S4SError):
    """An error a FHIR server answers as an OperationOutcome.

    ``code`` is a value of the FHIR ``issue-type`` value set (``invalid``, ``not-found``, ``forbidden``,
    ``security``, ``not-supported``, ``processing``, ``exception``, ``timeout``, ``transient``).
    """

    status = 400
    code = "invalid"
    severity = "error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message, status=status)
        if code is not None:
            self.code = code

    def operation_outcome(self) -> dict[str, Any]:
        """The R4 OperationOutcome resource for this error."""
        return {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": self.severity, "code": self.code, "diagnostics": self.message}],
        }


class FHIRNotFound(FHIRError):
    status = 404
    code = "not-found"


class FHIRForbidden(FHIRError):
    status = 403
    code = "forbidden"


class OAuthError(S4SError):
    """An OAuth 2.0 error (RFC 6749 4.1.2.1 and 5.2, RFC 7009, RFC 7662)."""

    status = 400
    error = "invalid_request"

    def __init__(
        self, description: str, *, error: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(description, status=status)
        if error is not None:
            self.error = error

    @property
    def description(self) -> str:
        return self.message

    def body(self) -> dict[str, str]:
        """The RFC 6749 5.2 error object."""
        return {"error": self.error, "error_description": self.message}


class InvalidToken(OAuthError):
    """A missing, unknown, expired or revoked bearer token (RFC 6750 3.1): 401."""

    status = 401
    error = "invalid_token"

    def www_authenticate(self, realm: str = "s4s") -> str:
        return f'Bearer realm="{realm}", error="{self.error}", error_description="{self.message}"'


class MissingToken(InvalidToken):
    """A request without any credentials: RFC 6750 3.1 says the challenge then carries no error code."""

    def www_authenticate(self, realm: str = "s4s") -> str:
        return f'Bearer realm="{realm}"'


class DICOMwebError(S4SError):
    """A DICOMweb failure answered as a status code plus a JSON status report (PS3.18 8.6)."""

    status = 400

    def status_report(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message}


class InvalidUID(DICOMwebError):
    """A UID that is not valid per PS3.5 9.1."""

    status = 400


class UpstreamError(DICOMwebError):
    """An upstream server failed: 502 (refused, garbage), 503 (unavailable), 504 (timeout)."""

    status = 502

    def __init__(self, message: str, *, status: int = 502, retry_after: str | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ClientError(S4SError):
    """Raised by the kit when a server answers with an error status."""

    def __init__(self, message: str, *, status: int, body: Any = None) -> None:
        super().__init__(message, status=status)
        self.body = body
