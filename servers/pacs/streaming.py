"""Sending a streamed answer through Tornado: large stored files with ``sendfile(2)``, the rest in blocks.

Blocks are read in a thread pool, the next one while the current one is being sent, with a flush between
blocks so memory holds at most two. Stored files above a threshold go from the page cache to the socket
with ``sendfile(2)`` (:class:`ZeroCopySender`), which costs less CPU per gigabyte than Orthanc.
"""

from __future__ import annotations

import asyncio
import os
import socket
from concurrent.futures import Executor

import tornado.web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

from servers.pacs.segments import FileRange, Segment, iter_blocks, known_length
from servers.runtime import fd_ready, limit_unsent


async def send(handler: tornado.web.RequestHandler, segments: list[Segment], content_type: str,
               executor: Executor, block: int, sendfile_min_bytes: int | None,
               unsent_limit: int | None = None) -> None:
    """Send ``segments`` as the body of ``handler``'s answer and finish it.

    Stored files of at least ``sendfile_min_bytes`` go out with ``sendfile(2)`` when the total length is
    known, with at most about ``unsent_limit`` bytes left unsent in a TCP socket's queue (see
    :class:`servers.pacs.settings.PACSSettings`); everything else in blocks of about ``block`` bytes
    read in ``executor``.
    """
    handler.set_header("Content-Type", content_type)
    total = known_length(segments)
    if total is not None:
        handler.set_header("Content-Length", str(total))
    minimum = sendfile_min_bytes
    large = minimum is not None and any(
        isinstance(s, FileRange) and s.length >= minimum for s in segments)
    if total is None or minimum is None or not large:
        if await _send_blocks(handler, segments, executor, block):
            handler.finish()
        return
    try:
        await handler.flush()  # the status line and headers go first
    except StreamClosedError:
        return
    sender = ZeroCopySender.of(handler)
    if sender is None:
        if await _send_blocks(handler, segments, executor, block):
            handler.finish()
        return
    # small delimiter writes between large sendfile(2) calls must not wait for ACKs (Nagle)
    sender.connection.stream.set_nodelay(True)
    if unsent_limit:
        limit_unsent(sender.sock, unsent_limit)
    try:
        batch: list[Segment] = []
        for seg in segments:
            if isinstance(seg, FileRange) and seg.length >= minimum:
                if batch and not await _send_blocks(handler, batch, executor, block):
                    return
                batch = []
                await sender.send(seg)
            else:
                batch.append(seg)
        if batch and not await _send_blocks(handler, batch, executor, block):
            return
    except (StreamClosedError, OSError):
        sender.abort()
        return
    handler.finish()


async def _send_blocks(handler: tornado.web.RequestHandler, segments: list[Segment], executor: Executor,
                       block: int) -> bool:
    """Send ``segments`` through Tornado in blocks; False when the client went away."""
    if all(isinstance(s, bytes) for s in segments):  # multipart delimiters: no need for the pool
        try:
            handler.write(b"".join(s for s in segments if isinstance(s, bytes)))
            await handler.flush()
        except StreamClosedError:
            return False
        return True
    loop = asyncio.get_running_loop()
    blocks = iter_blocks(segments, block)
    upcoming = asyncio.ensure_future(loop.run_in_executor(executor, next, blocks, None))
    try:
        while True:
            data = await upcoming
            if data is None:
                break
            # read the next block while this one is being sent
            upcoming = asyncio.ensure_future(loop.run_in_executor(executor, next, blocks, None))
            handler.write(data)
            await handler.flush()
    except StreamClosedError:
        return False  # the client went away
    finally:
        await asyncio.wait([upcoming])  # never close the generator while a thread runs it
        if not upcoming.cancelled() and upcoming.exception() is None:
            blocks.close()
    return True


class ZeroCopySender:
    """Sends byte ranges of stored files with ``sendfile(2)`` on the connection's socket, between
    Tornado's own writes.

    Tornado has no sendfile support, so this relies on two details of its HTTP/1.1 connection: the socket
    of its IOStream (idle once a flush has completed) and the count of body bytes still expected for the
    Content-Length, which is decreased by what was sent. :meth:`of` returns None (and the caller sends
    through Tornado) whenever these are not as expected: TLS, HTTP/2, another Tornado version.
    """

    def __init__(self, connection: HTTP1Connection, sock: socket.socket) -> None:
        self.connection = connection
        self.sock = sock

    @classmethod
    def of(cls, handler: tornado.web.RequestHandler) -> ZeroCopySender | None:
        conn = handler.request.connection
        if not isinstance(conn, HTTP1Connection) or not isinstance(conn.stream, IOStream) or \
                isinstance(conn.stream, SSLIOStream):  # a plain socket (one handed over: servers.handoff)
            return None
        if not isinstance(getattr(conn, "_expected_content_remaining", None), int):
            return None
        sock = conn.stream.socket
        if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
            return None
        return cls(conn, sock)

    async def send(self, seg: FileRange) -> None:
        remaining = getattr(self.connection, "_expected_content_remaining", None)
        if not isinstance(remaining, int) or remaining < seg.length:
            raise StreamClosedError()
        fd = os.open(seg.path, os.O_RDONLY)
        try:
            sent = await self._sendfile(fd, seg.offset, seg.length)
        finally:
            os.close(fd)
        if sent != seg.length:
            raise StreamClosedError()
        self.connection._expected_content_remaining = remaining - sent

    async def _sendfile(self, fd: int, offset: int, count: int) -> int:
        """``sendfile(2)`` until ``count`` bytes went out (fewer if the file ends first), waiting for
        the socket only when it is full.

        Not ``loop.sock_sendfile``: it goes back to the event loop after every call, even one that sent
        the whole range (a writer registered, a loop turn, the writer removed, another turn to resume the
        caller): per stored file two loop turns and three extra system calls, which on 128 KiB files was
        a fifth of a PACS worker's time (py-spy, four concurrent retrieves)."""
        out = self.sock.fileno()
        total = 0
        while total < count:
            try:
                n = os.sendfile(out, fd, offset + total, count - total)
            except (BlockingIOError, InterruptedError):
                await fd_ready(out, write=True)
                continue
            if n == 0:
                break  # the file is shorter than the index says
            total += n
        return total

    def abort(self) -> None:
        """Close the connection after a failed send: the client cannot tell where the body stopped."""
        self.connection.stream.close()
