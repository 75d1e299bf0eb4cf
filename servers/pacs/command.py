"""Run the PACS alone: a DICOMweb origin server (QIDO-RS, WADO-RS, STOW-RS) on an embedded store."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from servers.demo import DemoContext
from servers.handoff import HandoffListener, bind_handoff
from servers.pacs.app import dicomweb_url, make_app
from servers.pacs.handlers import PACSContext
from servers.pacs.seed import seed
from servers.pacs.settings import PACSSettings
from servers.pacs.store import Store
from servers.prefork import add_processes_argument, serve_forked
from servers.runtime import CLEANUP_KEY, Reservation, Served, ServerLoop, bind_unix, reserve


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="pacs-data", help="folder of the store (default ./pacs-data)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free port)")
    p.add_argument("--unix-socket", metavar="PATH",
                   help="also listen on this Unix-domain socket (mode 0600), for a broker on the same host "
                        "(s4s-servers broker --pacs-socket PATH): that hop then skips TCP")
    p.add_argument("--handoff-socket", metavar="PATH",
                   help="also take client connections handed over by a broker on the same host through "
                        "this Unix socket (mode 0600; s4s-servers broker --pacs-handoff PATH): the PACS then "
                        "sends retrieves straight to the broker's clients (docs/broker.md)")
    p.add_argument("--urls-file", help="write {\"pacs_dicomweb\": url} to this file")
    p.add_argument("--max-upload-bytes", type=int, default=PACSSettings.max_upload_bytes,
                   help="STOW-RS bodies larger than this are refused with 413")
    p.add_argument("--workers", type=int, default=PACSSettings.workers,
                   help="threads for blocking work, per process")
    add_processes_argument(p, "the number of cores uses them all")
    p.add_argument("--unsent-limit", type=_non_negative, metavar="BYTES",
                   default=PACSSettings.unsent_limit_bytes,
                   help="at most this much data left unsent in a TCP connection's send queue while "
                        "sending stored files (TCP_NOTSENT_LOWAT; default %(default)s, 0: the kernel's "
                        "default, no limit; docs/pacs.md)")
    p.add_argument("--no-fsync", action="store_true",
                   help="do not fsync stored files (faster, not crash-safe; benchmarks only)")


def serve(loop: ServerLoop, settings: PACSSettings, reservation: Reservation) -> Served:
    """Serve a PACS built from ``settings`` on ``reservation`` (bodies up to twice the upload limit are
    read by Tornado; the handler answers 413 past the limit itself)."""
    return loop.serve(lambda url: make_app(settings, url), reservation,
                      max_body_size=2 * settings.max_upload_bytes + 1024 * 1024)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _settings(args: argparse.Namespace) -> PACSSettings:
    return PACSSettings(data_dir=Path(args.data_dir).resolve(), max_upload_bytes=args.max_upload_bytes,
                        workers=args.workers, fsync=not args.no_fsync,
                        unsent_limit_bytes=args.unsent_limit or None)


def _reserve(args: argparse.Namespace) -> tuple[Reservation, socket.socket | None]:
    """The TCP port, plus the Unix socket when ``--unix-socket`` names one, and the handoff socket when
    ``--handoff-socket`` does."""
    reservation = reserve(args.host, args.port)
    handoff_sock = None
    try:
        if args.unix_socket:
            reservation.sockets.append(bind_unix(args.unix_socket))
        if args.handoff_socket:
            handoff_sock = bind_handoff(args.handoff_socket)
    except BaseException:
        for sock in reservation.sockets:
            sock.close()
        if len(reservation.sockets) > 1:  # ours, bound before the handoff socket failed
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.unix_socket)
        raise
    return reservation, handoff_sock


def _listen_for_handoffs(loop: ServerLoop, served: Served, sock: socket.socket | None) -> None:
    if sock is None:
        return
    listener = HandoffListener(sock, served.server)
    loop.call(listener.start)
    served.app.settings.setdefault(CLEANUP_KEY, []).append(listener.stop)


def _urls(args: argparse.Namespace, reservation: Reservation) -> dict[str, Any]:
    urls = {"pacs_dicomweb": dicomweb_url(reservation.url)}
    if args.unix_socket:
        urls["pacs_socket"] = str(Path(args.unix_socket).resolve())
    if args.handoff_socket:
        urls["pacs_handoff"] = str(Path(args.handoff_socket).resolve())
    return urls


def _remove_socket(args: argparse.Namespace) -> None:
    for path in (args.unix_socket, args.handoff_socket):
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def run(args: argparse.Namespace, loop: ServerLoop) -> dict[str, Any]:
    reservation, handoff_sock = _reserve(args)
    try:
        served = serve(loop, _settings(args), reservation)
        _listen_for_handoffs(loop, served, handoff_sock)
    except BaseException:
        _remove_socket(args)
        raise
    served.app.settings.setdefault(CLEANUP_KEY, []).append(lambda: _remove_socket(args))
    return _urls(args, reservation)


def run_forked(args: argparse.Namespace, announce: Callable[[dict[str, Any]], None]) -> int:
    """Serve from ``args.processes`` worker processes on one port (:mod:`servers.prefork`). The
    supervisor opens the store once (lock, tidy, schema) and keeps its folder locked; the workers share
    it: SQLite serialises their writes, and stored files are content-addressed."""
    settings = _settings(args)
    reserved, handoff_sock = _reserve(args)
    reservation = replace(reserved, shared=True)

    def worker(loop: ServerLoop) -> None:
        served = serve(loop, replace(settings, shared_store=True), reservation)
        _listen_for_handoffs(loop, served, handoff_sock)

    folder = None
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        folder = Store(settings.data_dir, fsync=settings.fsync).hand_over()
        return serve_forked(args.processes, reservation, worker,
                            lambda pids: announce(_urls(args, reservation)))
    finally:
        _remove_socket(args)  # workers never get here: they end with os._exit
        if folder is not None:
            folder.close()


def start_in_demo(ctx: DemoContext, loop: ServerLoop) -> dict[str, Any]:
    """Serve the PACS on the stack's reservation, with the demo plan's studies loaded."""
    served = serve(loop, PACSSettings(data_dir=ctx.data_dir / "pacs"), ctx.reservations["pacs"])
    pacs: PACSContext = served.app.settings["pacs"]
    seed(pacs.store, ctx.plan)
    return {"pacs_dicomweb": dicomweb_url(served.url)}
