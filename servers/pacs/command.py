"""Run the PACS alone: a DICOMweb origin server (QIDO-RS, WADO-RS, STOW-RS) on an embedded store."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from servers.demo import DemoContext
from servers.pacs.app import dicomweb_url, make_app
from servers.pacs.handlers import PACSContext
from servers.pacs.seed import seed
from servers.pacs.settings import PACSSettings
from servers.pacs.store import Store
from servers.prefork import serve_forked
from servers.runtime import Reservation, Served, ServerLoop, reserve


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="pacs-data", help="folder of the store (default ./pacs-data)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free port)")
    p.add_argument("--urls-file", help="write {\"pacs_dicomweb\": url} to this file")
    p.add_argument("--max-upload-bytes", type=int, default=PACSSettings.max_upload_bytes,
                   help="STOW-RS bodies larger than this are refused with 413")
    p.add_argument("--workers", type=int, default=PACSSettings.workers,
                   help="threads for blocking work, per process")
    p.add_argument("--processes", type=_positive, default=1,
                   help="worker processes sharing the port (default 1; the number of cores uses them all)")
    p.add_argument("--no-fsync", action="store_true",
                   help="do not fsync stored files (faster, not crash-safe; benchmarks only)")


def serve(loop: ServerLoop, settings: PACSSettings, reservation: Reservation) -> Served:
    """Serve a PACS built from ``settings`` on ``reservation`` (bodies up to twice the upload limit are
    read by Tornado; the handler answers 413 past the limit itself)."""
    return loop.serve(lambda url: make_app(settings, url), reservation,
                      max_body_size=2 * settings.max_upload_bytes + 1024 * 1024)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _settings(args: argparse.Namespace) -> PACSSettings:
    return PACSSettings(data_dir=Path(args.data_dir).resolve(), max_upload_bytes=args.max_upload_bytes,
                        workers=args.workers, fsync=not args.no_fsync)


def run(args: argparse.Namespace, loop: ServerLoop) -> dict[str, Any]:
    served = serve(loop, _settings(args), reserve(args.host, args.port))
    return {"pacs_dicomweb": dicomweb_url(served.url)}


def run_forked(args: argparse.Namespace, announce: Callable[[dict[str, Any]], None]) -> int:
    """Serve from ``args.processes`` worker processes on one port (:mod:`servers.prefork`). The
    supervisor opens the store once (lock, tidy, schema) and keeps its folder locked; the workers share
    it: SQLite serialises their writes, and stored files are content-addressed."""
    settings = _settings(args)
    reservation = replace(reserve(args.host, args.port), shared=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    folder = Store(settings.data_dir, fsync=settings.fsync).hand_over()

    def worker(loop: ServerLoop) -> None:
        serve(loop, replace(settings, shared_store=True), reservation)

    try:
        return serve_forked(args.processes, reservation, worker,
                            lambda pids: announce({"pacs_dicomweb": dicomweb_url(reservation.url)}))
    finally:
        folder.close()


def start_in_demo(ctx: DemoContext, loop: ServerLoop) -> dict[str, Any]:
    """Serve the PACS on the stack's reservation, with the demo plan's studies loaded."""
    served = serve(loop, PACSSettings(data_dir=ctx.data_dir / "pacs"), ctx.reservations["pacs"])
    pacs: PACSContext = served.app.settings["pacs"]
    seed(pacs.store, ctx.plan)
    return {"pacs_dicomweb": dicomweb_url(served.url)}
