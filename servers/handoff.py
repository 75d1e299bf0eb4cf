"""Connection handoff: the broker passes an authorized client's connection to a PACS on the same host.

A relay, however lean (``splice(2)`` between the sockets, see :mod:`servers.broker.http1_stream`), makes
the kernel move every byte twice, and on a 2-core machine shared by client, broker and PACS that costs
the client its CPU: through the broker a whole-study retrieve ran at 0.60-0.95x of the PACS direct
(issue 4 asks >= 0.9x). With a handoff the broker does what only it can do (introspect the token, check
that the study is the token's patient's, audit) and then gives the client's socket itself to the PACS,
which answers on it as on any of its own connections: ``sendfile(2)`` from its files to the client, the
broker out of the data path. The same idea as nginx's ``X-Accel-Redirect``, with the socket passed as
Unix systems pass descriptors (``SCM_RIGHTS``, unix(7)).

The protocol, on a Unix ``SOCK_SEQPACKET`` socket of the PACS (mode 0600: the broker runs as the same
user; no one else can connect):

1. The broker connects (or, for a client connection the PACS gave back before, uses that client
   connection's control connection again: the same PACS worker) and sends one message: the request it
   wants answered, as an HTTP/1.1 request head it builds itself (``GET {PACS path}?{query}``,
   ``Accept``, and ``Connection: close`` only if the client asked for it; never the client's token),
   with the client's socket attached. It then closes its own descriptor of that socket (the connection
   stays open: the PACS holds it).
2. The PACS answers that one request on that socket through its own HTTP server, and reads nothing
   else from it: a second request on the connection is the broker's to authorize.
3. The PACS sends one message back: the status it answered (ASCII digits), or ``0`` if the connection
   ended before an answer was complete; with the socket attached when the connection can carry another
   request (the answer went out whole and nobody asked to close). The broker audits the status and,
   given the socket back, serves the client's next request on it, as on any of its connections: a
   client keeps one connection for many retrieves, as it would with the PACS itself (a new TCP
   connection per study cost the httpx client 20% of its speed on 105 MB studies, measured).

Only for plain HTTP/1.1 client connections (a TLS session's state lives in the broker's process) and
only for answers the broker passes through unchanged (WADO-RS instances, frames, bulk data, rendered);
searches and metadata, which the broker filters or rewrites, never take this path.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import socket
import weakref
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

from servers.runtime import bind_unix, fd_ready

log = logging.getLogger("s4s.handoff")

MAX_HEAD_BYTES = 16 * 1024
_FDS = socket.CMSG_SPACE(array.array("i", [0]).itemsize)


class HandoffError(Exception):
    """The PACS did not take the connection (no listener, refused, a broken control socket)."""


# -- the PACS's side ------------------------------------------------------------------------------------


class _HandedStream(IOStream):
    """An ``IOStream`` on a handed-over socket for one request: the one the broker sent.

    ``read_from_fd`` is the documented place where an ``IOStream`` gets its bytes: here it returns the
    request head, then never reads the socket (whatever the client sends next is the broker's), and
    once the answer is complete it reports end of stream, so Tornado closes the stream: ``close_fd``
    then keeps the socket open for the broker (``kept``) instead of closing it, unless Tornado closed
    the stream for its own reasons (an error, the client gone, ``Connection: close``)."""

    def __init__(self, sock: socket.socket, head: bytes, closed: asyncio.Future[None]) -> None:
        super().__init__(sock)
        self._head = memoryview(head)
        self._closed_future = closed
        self.answered: int | None = None  #: the status, once the answer went out whole
        self._ended = False
        self.kept: int | None = None  #: the socket's descriptor, kept open for the broker

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self.answered is not None:
            self._ended = True
            return 0  # end of stream: Tornado closes it (close_fd below)
        # as if nothing had arrived: the PACS answers one request only. (A client that pipelines its
        # next request, or closes, while this answer goes out makes the socket readable for nothing
        # until the answer ends: Tornado then polls it in vain; no client of ours pipelines.)
        return None

    def abandon(self) -> None:
        """Close the connection for good (nothing goes back to the broker): what a session that ends
        early (cancelled at shutdown, the broker gone) leaves must not stay open."""
        self._ended = False
        if not self.closed():
            self.close()
        if self.kept is not None:
            socket.close(self.kept)
            self.kept = None

    def close_fd(self) -> None:
        if self._ended and self.socket is not None:
            self.kept = self.socket.detach()  # the open connection goes back to the broker
            self.socket = None  # type: ignore[assignment]  # as IOStream.close_fd leaves it
        else:
            super().close_fd()
        if not self._closed_future.done():
            self._closed_future.set_result(None)


#: how long after a handed connection closed its handler may still be finishing: a client that read the
#: whole answer (``Connection: close``) may close before the handler's ``finish`` ran
FINISH_GRACE = 2.0


def report(request: Any, status: int) -> None:
    """Called by the PACS's handlers when they finish (``on_finish``): the status the broker is told, if
    the body went out whole (Tornado finishes a handler whose client went away, too; what it still
    expected of the Content-Length tells the two apart, as :mod:`servers.pacs.streaming` reads it)."""
    connection = request.connection
    stream = getattr(connection, "stream", None)
    if isinstance(stream, _HandedStream) and stream.answered is None and \
            not getattr(connection, "_expected_content_remaining", None):
        stream.answered = status


def bind_handoff(path: str) -> socket.socket:
    """The PACS's handoff socket at ``path`` (0600; a stale one is replaced, a live one refused)."""
    return bind_unix(path, socket.SOCK_SEQPACKET)


class HandoffListener:
    """Accepts handoffs on ``sock`` and serves each handed connection with ``server``. Runs on the loop
    of ``server``; :meth:`start` from that loop's thread."""

    def __init__(self, sock: socket.socket, server: HTTPServer) -> None:
        self.sock = sock
        self.server = server
        self.handed = 0  #: requests answered on connections handed over, so far
        self.sessions = 0  #: control connections taken (one per client connection while it comes back)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._accept)

    def stop(self) -> None:
        """Take no more handoffs (connections already handed finish on the server); closes the socket."""
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        for task in self._tasks:
            task.cancel()
        self.sock.close()

    def _accept(self) -> None:
        try:
            control, _ = self.sock.accept()  # one per wakeup: worker processes share the socket
        except (BlockingIOError, InterruptedError):
            return
        control.setblocking(False)
        self.sessions += 1
        task = asyncio.get_running_loop().create_task(self._serve(control))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, control: socket.socket) -> None:
        """The handoffs of one control connection: one client connection's retrieves, one at a time, all
        on this worker process (its next request comes here again, see :class:`Handoff`)."""
        first = True
        with control:
            while True:
                try:
                    head, client = await _receive(control, 10 if first else None)
                except EOFError:
                    return  # the broker closed the session: the client's connection is gone
                except (HandoffError, OSError) as exc:
                    log.warning("handoff refused: %s", exc)
                    return
                first = False
                if not await self._answer(control, head, client):
                    return

    async def _answer(self, control: socket.socket, head: bytes, client: socket.socket) -> bool:
        """Serve ``head`` on ``client`` and report; True when the connection went back to the broker."""
        self.handed += 1
        status, kept = await serve_handed(self.server, head, client)
        try:
            if kept is not None:
                _send_with_socket(control, str(status).encode(), kept)
                return True
            await asyncio.get_running_loop().sock_sendall(control, str(status).encode())
        except OSError:
            pass  # the broker is gone: the connection closes with our descriptor
        finally:
            if kept is not None:
                socket.close(kept)  # ours; the broker holds its own
        return False


async def serve_handed(server: HTTPServer, head: bytes, client: socket.socket) -> tuple[int, int | None]:
    """Answer the one request ``head`` on the connection ``client`` with ``server``, as if it had come on
    that connection, and read nothing else from it. Returns the status answered (0: the connection ended
    before an answer was complete) and, when the connection can carry another request (the answer went
    out whole and nobody asked to close), its descriptor, now the caller's; otherwise it is closed."""
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    try:
        address: Any = client.getpeername() if client.family in (socket.AF_INET, socket.AF_INET6) else ()
    except OSError:
        address = ()
    stream = _HandedStream(client, head, closed)
    server.handle_stream(stream, address)
    try:
        await closed
        deadline = loop.time() + FINISH_GRACE
        while stream.answered is None and stream.kept is None and loop.time() < deadline:
            await asyncio.sleep(0.01)  # the handler may still be finishing (see FINISH_GRACE)
        kept, stream.kept = stream.kept, None
        return stream.answered or 0, kept
    finally:
        stream.abandon()  # a connection not given back is closed


async def _recvmsg(control: socket.socket, size: int,
                   timeout: float | None) -> tuple[bytes, array.array[int], int]:
    """One message and the descriptors that came with it."""
    while True:
        try:
            data, ancillary, flags, _ = control.recvmsg(size, _FDS)
            break
        except (BlockingIOError, InterruptedError):
            await fd_ready(control.fileno(), timeout=timeout)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, fds, flags


def _send_with_socket(control: socket.socket, message: bytes, fd: int) -> None:
    control.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


async def _receive_status(control: socket.socket) -> tuple[bytes, int | None]:
    data, fds, _ = await _recvmsg(control, 64, None)
    for extra in fds[1:]:
        socket.close(extra)
    return data, (fds[0] if fds else None)


async def _receive(control: socket.socket, timeout: float | None) -> tuple[bytes, socket.socket]:
    head, fds, flags = await _recvmsg(control, MAX_HEAD_BYTES, timeout)
    if not head and not fds:
        raise EOFError
    if len(fds) != 1 or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or not head.endswith(b"\r\n\r\n"):
        for fd in fds:
            socket.close(fd)
        raise HandoffError("a handoff message must be one request head with one socket")
    client = socket.socket(fileno=fds[0])
    if client.type != socket.SOCK_STREAM:
        client.close()
        raise HandoffError("the socket handed over is not a stream socket")
    client.setblocking(False)
    return head, client


# -- the broker's side ----------------------------------------------------------------------------------


#: the control connection of each client connection the PACS gave back, for that client's next request
_sessions: weakref.WeakKeyDictionary[Any, Handoff] = weakref.WeakKeyDictionary()


class Handoff:
    """A client connection's retrieves on their way from the broker to the PACS listening at ``path``.

    One control connection per client connection, kept while the PACS gives the client's connection
    back: its next retrieve goes to the same PACS worker process, as a keep-alive connection to the PACS
    itself would (with two worker processes taking turns, a 105 MB study through the broker ran at
    0.84x of the PACS direct; on one worker, or one per connection, at 0.98x)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.control: socket.socket | None = None
        self.reused = False  #: the session of a client connection that came back before
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @classmethod
    def of(cls, path: str, connection: Any) -> Handoff:
        """The handoff session of the client ``connection`` (an ``IOStream``): the one it came back with,
        else a new one."""
        session = _sessions.pop(connection, None) if connection is not None else None
        if session is None:
            return cls(path)
        if session._finalizer is not None:
            session._finalizer.detach()  # the session moves on with the request, whatever that stream does
        session.reused = True
        return session

    def keep(self, connection: Any) -> None:
        """The PACS gave the client's connection back (now ``connection``): keep this session for its next
        request, closed when that connection is gone."""
        _sessions[connection] = self
        self._finalizer = weakref.finalize(connection, self.close)

    async def connect(self) -> None:
        """Reach the PACS's handoff socket (before anything is given away); raises HandoffError."""
        if self.control is not None:
            return  # the session of this client connection
        control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        control.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(control, self.path)
        except OSError as exc:
            control.close()
            raise HandoffError(f"the PACS's handoff socket {self.path} does not answer "
                               f"({type(exc).__name__})") from None
        self.control = control

    async def give(self, head: bytes, client: socket.socket) -> None:
        """Send the request head with the client's socket; the caller then closes its own descriptor. A
        session whose PACS worker has gone (stopped, restarted) is replaced by a new one, once."""
        assert self.control is not None
        message = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [client.fileno()]))]
        try:
            self.control.sendmsg([head], message)
            return
        except OSError as exc:
            if not self.reused:
                raise HandoffError(f"the PACS did not take the connection ({exc})") from None
        self.close()
        self.reused = False
        await self.connect()
        try:
            self.control.sendmsg([head], message)
        except OSError as exc:
            raise HandoffError(f"the PACS did not take the connection ({exc})") from None

    async def outcome(self) -> tuple[int, socket.socket | None]:
        """The status the PACS answered on the connection (0: it ended before an answer was complete),
        and the connection itself when the PACS gives it back for the client's next request."""
        assert self.control is not None
        try:
            data, fd = await _receive_status(self.control)
        except OSError:
            return 0, None
        client = socket.socket(fileno=fd) if fd is not None else None
        if client is not None:
            client.setblocking(False)
        return (int(data) if data.isdigit() else 0), client

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None


__all__ = ["Handoff", "HandoffError", "HandoffListener", "bind_handoff", "report", "serve_handed"]
