"""Serving Tornado applications on loopback, several in one process.

A :class:`ServerLoop` owns an asyncio event loop in a background thread. Each role's app factory is
served on sockets bound before the app is built, so the app (and every other role) knows its own URL
from the start. The CLI and the test fixtures both use it, so tests run the servers exactly as users do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application

T = TypeVar("T")

#: settings key of an Application: callables run (in order) when the server stops.
CLEANUP_KEY = "s4s_cleanup"
#: ``app.settings[SERVER_KEY]``: the HTTP server serving the app (to serve a connection given back to it)
SERVER_KEY = "s4s_http_server"


#: the signals that stop a server (Ctrl-C, ``kill``)
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class StopSignals:
    """SIGINT and SIGTERM, waited for by the main thread: ``StopSignals().wait()``.

    The handlers only write a byte to a pipe that :meth:`wait` reads. A handler that set a
    ``threading.Event`` deadlocked when a second signal landed while the first handler held the Event's
    lock (seen: ``pkill`` and the supervisor's SIGTERM arriving together left a PACS worker hanging);
    blocking the signals instead would pass the blocked mask on to child processes (JupyterLab).
    Install from the main thread (Python's rule for signal handlers).
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()  # not inherited by child processes (O_CLOEXEC)
        os.set_blocking(self._write, False)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):  # the pipe is full: a stop is already pending
            os.write(self._write, b"!")

    def wait(self) -> None:
        """Block until SIGINT or SIGTERM has arrived (at any time since construction)."""
        os.read(self._read, 1)


class StartupError(RuntimeError):
    """A server cannot start for a reason its user can fix (a data folder in use, a bad setting); the
    CLI prints the message alone, without a traceback."""


@dataclass
class Reservation:
    """Listening sockets bound before their application exists."""

    host: str
    port: int
    sockets: list[socket.socket]
    #: listened on by several worker processes (:mod:`servers.prefork`): see :func:`accept_one_per_wakeup`
    shared: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def reserve(host: str = "127.0.0.1", port: int = 0) -> Reservation:
    """Bind a listening socket on ``host:port`` (0 picks a free port)."""
    socks = bind_sockets(port, host, family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    return Reservation(host, socks[0].getsockname()[1], socks)


def bind_unix(path: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A listening Unix-domain socket at ``path``, readable and writable by this user only (0600);
    ``kind``: ``SOCK_STREAM`` (HTTP) or ``SOCK_SEQPACKET`` (:mod:`servers.handoff`).

    A socket file left by a server that is gone is replaced; one a live server still accepts on is not
    (:class:`StartupError`, as for a port in use), nor is any other kind of file. For a co-located
    client (the broker in front of this PACS) a Unix socket skips the kernel's TCP work for that hop:
    see docs/broker.md.
    """
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise StartupError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, kind)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by a server that stopped without removing it
        except OSError as exc:  # e.g. a live socket of another kind (EPROTOTYPE)
            raise StartupError(f"the socket {path} is in use ({exc.strerror})") from None
        else:
            raise StartupError(f"the socket {path} is in use by another server")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)  # before listen(): nobody can connect until then
        sock.listen(128)
        sock.setblocking(False)  # Tornado accepts until EAGAIN
    except OSError:
        sock.close()
        raise
    return sock


def accept_one_per_wakeup(server: HTTPServer, sockets: list[socket.socket]) -> None:
    """Serve ``sockets`` with ``server``, accepting one connection each time a socket is readable.

    Tornado's own accept handler takes every queued connection at once (up to 128). When worker
    processes share a listening socket, all of them wake for a new connection, and whichever runs first
    would take the whole queue: a burst of clients could land on one worker. Taking one at a time, the
    next connection goes to the worker that is free to pick it up first, and a busy one loses the race
    (connections made while every worker is idle still fall at random). Must run on the loop.

    Uses two attributes of Tornado's ``TCPServer`` (``_sockets``, ``_handlers``, so that ``stop()``
    closes these sockets too) and its ``_handle_connection``, stable since Tornado 4.
    """
    loop = asyncio.get_running_loop()
    for sock in sockets:
        sock.setblocking(False)
        fd = sock.fileno()

        def accept(sock: socket.socket = sock) -> None:
            try:
                connection, address = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # another worker took it, or the client gave up
            server._handle_connection(connection, address)

        loop.add_reader(fd, accept)
        server._sockets[fd] = sock

        def remove(fd: int = fd) -> None:
            loop.remove_reader(fd)

        server._handlers[fd] = remove


#: send buffer asked for on accepted Unix-socket connections (the kernel caps it at net.core.wmem_max)
UNIX_SEND_BUFFER = 4 * 1024 * 1024

#: what a server sending a large body lets wait unsent in a TCP socket's queue (:func:`limit_unsent`)
UNSENT_LIMIT_BYTES = 16 * 1024


def limit_unsent(sock: socket.socket, limit: int = UNSENT_LIMIT_BYTES) -> None:
    """Let at most about ``limit`` bytes wait unsent in ``sock``'s send queue (``TCP_NOTSENT_LOWAT``,
    tcp(7)): the socket reports itself writable, and a write takes more, only below it.

    Without a limit, a client that reads more slowly than the server sends leaves megabytes queued, and
    each of its window updates makes the kernel transmit from that queue in the client's own process:
    on loopback that work falls on the client, which slows it further (measured with httpx: 58-119 ms of
    client CPU per 105 MB study in such transfers instead of 40-48). With the limit the server transmits
    in its own time. 16 KiB, the value HTTP/2 servers use, measured best here (docs/benchmarks.md). TCP
    sockets only; others (a Unix socket between broker and PACS) are left as they are."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, limit)


async def fd_ready(fd: int, *, write: bool = False, timeout: float | None = None) -> None:
    """Wait on the running loop until ``fd`` is readable (writable with ``write``); ``TimeoutError``
    after ``timeout`` seconds. For sockets used with system calls Python's loop does not wrap
    (``recvmsg`` with descriptors, ``sendfile`` to a Tornado stream's socket)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
    add(fd, _wake, ready)
    try:
        await (ready if timeout is None else asyncio.wait_for(ready, timeout))
    finally:
        remove(fd)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():  # a level-triggered callback may fire again before the waiter runs
        ready.set_result(None)


class Server(HTTPServer):
    """Tornado's ``HTTPServer``, giving connections accepted on a Unix socket a large send buffer.

    A Unix stream socket starts with ``net.core.wmem_default`` (208 KiB) in flight, where loopback TCP
    grows its window to megabytes: a PACS sending a study to a broker over a Unix socket would then wake
    every 208 KiB (measured: the broker at 0.84x of the PACS direct instead of 0.91x).
    """

    def handle_stream(self, stream: Any, address: Any) -> None:
        sock = getattr(stream, "socket", None)
        if sock is not None and sock.family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNIX_SEND_BUFFER)
        super().handle_stream(stream, address)


@dataclass
class Served:
    url: str
    server: HTTPServer
    app: Application


@dataclass
class ServerLoop:
    """An event loop in a daemon thread, serving any number of Tornado applications."""

    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    served: list[Served] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> ServerLoop:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="s4s-server-loop", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop's thread and return its result."""
        fut: Future[T] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller's thread
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result()

    def run(self, coro: Awaitable[T]) -> T:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()  # type: ignore[arg-type]

    def serve(
        self,
        factory: Callable[[str], Application],
        reservation: Reservation | None = None,
        **server_options: Any,
    ) -> Served:
        """Build ``factory(url)`` on the loop's thread and serve it on ``reservation`` (a free port if None).

        ``server_options`` go to :class:`tornado.httpserver.HTTPServer` (``max_body_size``, ...).
        """
        res = reservation or reserve()

        def build() -> Served:
            app = factory(res.url)
            server = Server(app, xheaders=False, **server_options)
            app.settings[SERVER_KEY] = server
            if res.shared:
                accept_one_per_wakeup(server, res.sockets)
            else:
                server.add_sockets(res.sockets)
            return Served(res.url, server, app)

        served = self.call(build)
        self.served.append(served)
        return served

    def stop(self) -> None:
        """Stop every server, run the apps' cleanups, and end the loop."""

        async def shutdown() -> None:
            for s in reversed(self.served):
                s.server.stop()
                await s.server.close_all_connections()
                for cleanup in s.app.settings.get(CLEANUP_KEY, []):
                    result = cleanup()
                    if asyncio.iscoroutine(result):
                        await result

        if self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=30)
        finally:
            self.served.clear()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)
            self._thread = None
            self.loop.close()
