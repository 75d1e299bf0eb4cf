"""Serving one role from several worker processes that share its listening socket (pre-fork).

The supervisor binds the socket, prepares what must happen once (the PACS tidies and locks its store),
forks the workers, and then only watches them: each worker runs its own event loop and accepts
connections on the inherited socket, so the kernel spreads connections across the workers and a busy
worker (parsing a STOW-RS body, hashing, building metadata) does not hold up the others. This is
Tornado's own multi-process model (``bind_sockets`` + ``fork_processes``) with a supervisor that stops
on a signal instead of restarting workers: a worker that dies stops the whole server, loudly, so a
fault is never hidden behind a restart.

Fork happens before any thread is started in the supervisor (the caller must not have started a
:class:`~servers.runtime.ServerLoop`), so no worker inherits a lock held by another thread.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import select
import signal
import sys
from collections.abc import Callable
from typing import Literal

from servers.runtime import STOP_SIGNALS, Reservation, ServerLoop, StopSignals

log = logging.getLogger("s4s.servers.prefork")


def add_processes_argument(p: argparse.ArgumentParser, advice: str) -> None:
    """A role's ``--processes N`` option (at least 1, default 1), the count :func:`serve_forked` forks;
    ``advice`` ends its help."""
    p.add_argument("--processes", type=_at_least_one, default=1,
                   help=f"worker processes sharing the port (default 1; {advice})")


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value

_PR_SET_PDEATHSIG = 1


def serve_forked(processes: int, reservation: Reservation, worker: Callable[[ServerLoop], None],
                 ready: Callable[[list[int]], None]) -> int:
    """Fork ``processes`` workers that each run ``worker(loop)`` on a fresh :class:`ServerLoop` and serve
    until SIGTERM or SIGINT; call ``ready(pids)`` in the supervisor once every worker has built its
    application and serves (each says so through a pipe). A worker that fails before that stops the
    server without ``ready`` ever being called.

    Returns the supervisor's exit status: 0 after a stop signal, 1 when a worker died first.
    """
    if processes < 1:
        raise ValueError("processes must be at least 1")
    if not reservation.shared:
        raise ValueError("the reservation must be marked shared (workers then accept one at a time)")
    started_r, started_w = os.pipe()
    pids: list[int] = []
    for index in range(processes):
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            os.close(started_r)
            _worker_main(index, reservation, worker, started_w)
        pids.append(pid)
    os.close(started_w)
    for sock in reservation.sockets:  # the workers accept; the supervisor holds no connection
        sock.close()
    return _supervise(pids, ready, started_r)


def _worker_main(index: int, reservation: Reservation, worker: Callable[[ServerLoop], None],
                 started: int) -> None:
    status = 1
    try:
        _die_with_parent()
        stop = StopSignals()
        loop = ServerLoop().start()
        try:
            worker(loop)
            os.write(started, b"+")
            os.close(started)
            log.debug("worker %d (pid %d) serving %s", index, os.getpid(), reservation.url)
            stop.wait()
        finally:
            loop.stop()
        status = 0
    except BaseException:
        log.exception("worker %d (pid %d) failed", index, os.getpid())
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _die_with_parent() -> None:
    """Ask Linux to send this worker SIGTERM when the supervisor dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() == 1:  # the supervisor died before the request above
        os._exit(1)


def _supervise(pids: list[int], ready: Callable[[list[int]], None], started: int) -> int:
    watched = STOP_SIGNALS | {signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    alive = set(pids)
    status = 0
    try:
        outcome = _wait_until_started(alive, started)
        if outcome == "failed":
            log.error("a worker process failed while starting; stopping the server")
            return 1
        if outcome == "stopped":
            return 0
        ready(list(pids))
        while alive:
            exited = _reap(alive)
            if exited and signal.sigpending() & STOP_SIGNALS:
                break  # a stop signal for the whole group (Ctrl-C, a service manager): a clean stop
            if exited:
                log.error("worker process %s exited; stopping the server", ", ".join(map(str, exited)))
                status = 1
                break
            info = signal.sigwaitinfo(watched)
            if info.si_signo in STOP_SIGNALS:
                break
    finally:
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in list(alive):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    # the signals stay blocked: the caller exits with ``status``, and a second SIGTERM still pending
    # (``pkill`` and a service manager both sending one) must not kill it on the way out
    return status


def _wait_until_started(alive: set[int], started: int) -> Literal["started", "failed", "stopped"]:
    """Read one byte per worker from the ``started`` pipe, until all have said they serve, one exits
    first ("failed"), or a stop signal is pending ("stopped"; signals are blocked here, so they are
    polled between short waits)."""
    count = len(alive)
    try:
        while count > 0:
            readable, _, _ = select.select([started], [], [], 0.05)
            if readable:
                data = os.read(started, count)
                if not data:  # every worker closed its end: some exited without saying so
                    return "failed"
                count -= len(data)
            if signal.sigpending() & STOP_SIGNALS:
                return "stopped"
            if _reap(alive):
                return "stopped" if signal.sigpending() & STOP_SIGNALS else "failed"
        return "started"
    finally:
        os.close(started)


def _reap(alive: set[int]) -> list[int]:
    """Collect workers that have exited (without waiting); remove them from ``alive``."""
    exited = []
    for pid in list(alive):
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                continue
        alive.discard(pid)
        exited.append(pid)
    return exited
