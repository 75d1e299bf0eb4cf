"""Run the PACS alone: a DICOMweb origin server (QIDO-RS, WADO-RS, STOW-RS) on an embedded store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from servers.demo import DemoContext
from servers.pacs.app import dicomweb_url, make_app
from servers.pacs.handlers import PACSContext
from servers.pacs.seed import seed
from servers.pacs.settings import PACSSettings
from servers.runtime import Reservation, Served, ServerLoop, reserve


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="pacs-data", help="folder of the store (default ./pacs-data)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free port)")
    p.add_argument("--urls-file", help="write {\"pacs_dicomweb\": url} to this file")
    p.add_argument("--max-upload-bytes", type=int, default=PACSSettings.max_upload_bytes,
                   help="STOW-RS bodies larger than this are refused with 413")
    p.add_argument("--workers", type=int, default=PACSSettings.workers, help="threads for blocking work")
    p.add_argument("--no-fsync", action="store_true",
                   help="do not fsync stored files (faster, not crash-safe; benchmarks only)")


def serve(loop: ServerLoop, settings: PACSSettings, reservation: Reservation) -> Served:
    """Serve a PACS built from ``settings`` on ``reservation`` (bodies up to twice the upload limit are
    read by Tornado; the handler answers 413 past the limit itself)."""
    return loop.serve(lambda url: make_app(settings, url), reservation,
                      max_body_size=2 * settings.max_upload_bytes + 1024 * 1024)


def run(args: argparse.Namespace, loop: ServerLoop) -> dict[str, Any]:
    settings = PACSSettings(data_dir=Path(args.data_dir).resolve(), max_upload_bytes=args.max_upload_bytes,
                            workers=args.workers, fsync=not args.no_fsync)
    served = serve(loop, settings, reserve(args.host, args.port))
    return {"pacs_dicomweb": dicomweb_url(served.url)}


def start_in_demo(ctx: DemoContext, loop: ServerLoop) -> dict[str, Any]:
    """Serve the PACS on the stack's reservation, with the demo plan's studies loaded."""
    served = serve(loop, PACSSettings(data_dir=ctx.data_dir / "pacs"), ctx.reservations["pacs"])
    pacs: PACSContext = served.app.settings["pacs"]
    seed(pacs.store, ctx.plan)
    return {"pacs_dicomweb": dicomweb_url(served.url)}
