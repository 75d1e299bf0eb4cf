"""The broker's ``Upstream`` protocol: what it needs from a PACS, whatever the PACS speaks.

Implementations: :class:`servers.broker.dicomweb_upstream.DICOMwebUpstream` (QIDO-RS / WADO-RS, this
issue) and, later, a DIMSE one (C-FIND for queries, C-GET/C-MOVE for retrieves, producing the same
``multipart/related`` stream). Every failure is an :class:`~s4s_jupyter.core.errors.UpstreamError`
with the status the broker answers (502 refused/garbage, 504 timeout, 503 + Retry-After), or a
:class:`~s4s_jupyter.core.errors.DICOMwebError` for the PACS's own 4xx answers (404, 406, ...).
A failure after the answer started is :class:`UpstreamBroken`, raised by the body iterator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from s4s_jupyter.core.errors import UpstreamError

DicomJSON = dict[str, Any]


class QueryLevel(StrEnum):
    """QIDO-RS query levels (PS3.18 10.6.1: Search for Studies / Series / Instances)."""

    STUDY = "studies"
    SERIES = "series"
    INSTANCE = "instances"


class UpstreamBroken(UpstreamError):
    """The upstream answer broke off after it started (connection reset, timeout, truncation)."""


class UpstreamStream(Protocol):
    """An upstream answer whose body is read in chunks, never whole. Each chunk is valid until the
    iterator is advanced (implementations may reuse one buffer)."""

    status: int
    #: end-to-end headers safe to hand to the client (hop-by-hop ones already dropped)
    headers: Mapping[str, str]

    def iter_bytes(self) -> AsyncIterator[bytes | memoryview]: ...


@runtime_checkable
class ZeroCopyStream(Protocol):
    """An :class:`UpstreamStream` that can also move its body to a socket without copying it
    (Linux ``splice``); ``spliceable`` says whether this answer can."""

    @property
    def spliceable(self) -> bool: ...

    async def splice_to(self, fd: int) -> int: ...


class Upstream(Protocol):
    """A PACS as the broker sees it."""

    #: the URL prefix the PACS writes into its answers (RetrieveURL, BulkDataURI); "" when it writes none
    base_url: str

    async def query(self, level: QueryLevel, params: Sequence[tuple[str, str]], *,
                    study_uid: str | None = None, series_uid: str | None = None) -> list[DicomJSON]:
        """QIDO-RS at ``level``, optionally under a study (and series); ``[]`` when nothing matches."""
        ...

    async def metadata(self, path: str) -> list[DicomJSON]:
        """WADO-RS metadata (PS3.18 10.4.1.1.2) at ``path`` (``studies/{uid}[/series/{uid}...]/metadata``)."""
        ...

    def retrieve(self, path: str, params: Sequence[tuple[str, str]],
                 accept: str | None) -> AbstractAsyncContextManager[UpstreamStream]:
        """A streamed WADO-RS retrieve of ``path`` (relative to the DICOMweb base)."""
        ...

    async def aclose(self) -> None: ...
