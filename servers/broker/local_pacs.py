"""Retrieves answered in the broker's own process, from the store of our PACS on the same host
(``s4s-servers broker --pacs-store DIR``).

A handoff (:mod:`servers.handoff`) takes the broker out of the data path, but each retrieve still wakes
two processes, the broker and a PACS worker, and passes the connection between them: 1.2 ms more per
request than the PACS direct on this project's 2-core machine (docs/benchmarks.md), 5-12% of a 100 MB
study and half again the time of one instance. Here the broker answers the authorized request itself,
with the PACS's own application on the PACS's own store (opened as the PACS's worker processes open it:
shared, no lock, no tidying), on the client's connection, exactly as the PACS would: same handlers, same
``sendfile(2)``, same bytes. The PACS keeps serving everything else (STOW-RS, searches, metadata: the
broker filters and rewrites those, so they go to the PACS over HTTP as before).

Only requests the broker builds itself reach this application: ``GET`` of a WADO-RS resource the token's
patient owns (:meth:`LocalPACS.answer`), so nothing here writes to the store.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tornado.iostream import IOStream

from servers.handoff import serve_handed
from servers.pacs.app import make_app
from servers.pacs.settings import BASE_PATH, PACSSettings
from servers.runtime import CLEANUP_KEY, Server, StartupError

#: threads for the store's blocking work (SQLite lookups, small files) in the broker's process
WORKERS = 4


class LocalPACS:
    """Our PACS's application on its store folder ``data_dir``, serving requests the broker hands it.

    ``pacs_url``: that PACS's DICOMweb base (``http://host:port/dicom-web``), which its answers name
    (``Content-Location``), as the PACS itself would. Raises :class:`StartupError` for a folder that
    is not a PACS's or a URL that is not our PACS's shape."""

    def __init__(self, data_dir: Path, pacs_url: str) -> None:
        root = self.check(data_dir, pacs_url)
        self.app = make_app(PACSSettings(Path(data_dir), workers=WORKERS, shared_store=True), root)
        self.server = Server(self.app, xheaders=False)
        self.answered = 0  #: requests answered here, so far

    @staticmethod
    def check(data_dir: Path, pacs_url: str) -> str:
        """The PACS's root URL, if ``data_dir`` is a PACS's data folder and ``pacs_url`` our PACS's
        DICOMweb base; else :class:`StartupError`."""
        if not (Path(data_dir) / "index.sqlite3").is_file():
            raise StartupError(f"--pacs-store: {data_dir} is not a PACS data folder (no index.sqlite3)")
        parts = urlsplit(pacs_url)
        if parts.scheme not in ("http", "https") or parts.path.rstrip("/") != BASE_PATH:
            raise StartupError(f"--pacs-store needs --pacs to be our PACS's DICOMweb base "
                               f"(http://host:port{BASE_PATH}), not {pacs_url}")
        return f"{parts.scheme}://{parts.netloc}"

    async def answer(self, head: bytes, client: IOStream) -> tuple[int, socket.socket | None]:
        """Answer the request ``head`` on the connection of ``client`` (a stream detached from the broker's
        handler); the status answered (0: not complete) and the connection, when it can carry the
        client's next request.

        The PACS's application gets a descriptor of its own and ``client`` is closed before it answers:
        that stream, left open, would read the client's next request to see whether the client closed,
        and the request would go with it (curl's ninth request on one connection hung so)."""
        try:
            own = socket.socket(fileno=os.dup(client.socket.fileno()))
        finally:
            client.close()
        own.setblocking(False)
        self.answered += 1
        status, kept = await serve_handed(self.server, head, own)
        back = socket.socket(fileno=kept) if kept is not None else None
        if back is not None:
            back.setblocking(False)
        return status, back

    async def close(self) -> None:
        """Close the connections still being answered, then the store and its threads."""
        await self.server.close_all_connections()
        cleanups: list[Any] = self.app.settings.get(CLEANUP_KEY, [])
        for cleanup in cleanups:
            cleanup()


__all__ = ["LocalPACS"]
