"""When to try a request again, and how long to wait first (RFC 9110 10.2.3 ``Retry-After``; 15.6.4 503,
RFC 6585 4 429): one policy for FHIR searches and DICOMweb retrievals alike.

``429`` and ``503`` wait what the server's ``Retry-After`` asks (delta-seconds or an HTTP-date), at most
``max_retry_after`` seconds; without it, and for ``500``, ``502``, ``504`` and connection errors, the wait
grows exponentially from ``backoff``. Only safe, idempotent requests (GET) are retried.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC

#: answers worth another try: busy (429, 503) or a failing gateway/server (500, 502, 504)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """The delay a ``Retry-After`` header asks for: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try (``max_attempts``) and how long to wait between tries."""

    max_attempts: int = 5
    max_retry_after: float = 300.0
    backoff: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, status: int | None, retry_after: str | None, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 2`` after an answer ``status`` (None: no answer)."""
        if status in (429, 503):
            asked = retry_after_seconds(retry_after)
            if asked is not None:
                return min(asked, self.max_retry_after)
        return float(self.backoff * 2**attempt)
