"""Page links of FHIR searches (R4 3.1.1.3 "Paging"): keyset cursors, opaque to clients, signed by the server.

R4 leaves the form of ``next``/``previous`` links to the server. Ours are the search URL itself (the applied
parameters and ``_count``) plus ``_cursor``: the position of the page in the search order -- after (or
before) the (lastUpdated, id) key of a resource of the previous page -- its offset and the search's
``total``, counted once, on the first page. The cursor is base64url JSON and an HMAC-SHA256 over it
*and* the search it belongs to (resource type, applied parameters, ``_count``, the token's patient), keyed
by a secret of the store (:attr:`servers.ehr.fhir.store.FHIRStore.paging_key`). A cursor that was edited,
or moved to another search, is refused (400): it cannot shift the page or fake the total. It never widens
access either way: every page is authorized again, and the store applies the patient compartment and the
scopes in SQL on every page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from s4s_jupyter.core.errors import FHIRError
from servers.ehr.fhir.query import SearchQuery
from servers.ehr.fhir.store import SortKey

#: bytes of the HMAC kept in a cursor (128 bits)
_MAC_BYTES = 16


@dataclass(frozen=True)
class Cursor:
    """A page position: ``offset`` of its first match, the search's ``total``, and exactly one of
    ``after`` (the page follows this key) and ``before`` (the page precedes this key)."""

    offset: int
    total: int
    after: SortKey | None = None
    before: SortKey | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, query: SearchQuery, patient: str | None, payload: bytes) -> bytes:
    search = json.dumps([query.resource_type, list(query.applied), query.count, patient],
                        separators=(",", ":")).encode()
    return hmac.new(secret, search + b"\n" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def encode(secret: bytes, query: SearchQuery, patient: str | None, cursor: Cursor) -> str:
    """The ``_cursor`` value of ``cursor`` for ``query`` as run for ``patient`` (None: system access)."""
    body: dict[str, Any] = {"o": cursor.offset, "t": cursor.total}
    if cursor.after is not None:
        body["a"] = list(cursor.after)
    if cursor.before is not None:
        body["b"] = list(cursor.before)
    payload = json.dumps(body, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, query, patient, payload))}"


def _key(value: Any) -> SortKey:
    if (not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], int | float)
            or isinstance(value[0], bool) or not isinstance(value[1], str)):
        raise ValueError("bad key")
    return float(value[0]), value[1]


def decode(secret: bytes, query: SearchQuery, patient: str | None, text: str) -> Cursor:
    """The cursor in ``text``; :class:`FHIRError` (400) unless this server issued it for this search."""
    invalid = FHIRError("_cursor is not a page link of this search (follow the Bundle's links unchanged)")
    payload_text, dot, mac_text = text.partition(".")
    try:
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except (binascii.Error, ValueError):
        raise invalid from None
    if not dot or not hmac.compare_digest(mac, _mac(secret, query, patient, payload)):
        raise invalid
    try:
        body = json.loads(payload)
        offset, total = body["o"], body["t"]
        if not (isinstance(offset, int) and isinstance(total, int) and offset >= 0 and total >= 0):
            raise ValueError("bad numbers")
        after = _key(body["a"]) if "a" in body else None
        before = _key(body["b"]) if "b" in body else None
        if (after is None) == (before is None):
            raise ValueError("one of after and before")
    except (ValueError, KeyError, TypeError):
        raise invalid from None
    return Cursor(offset, total, after, before)
