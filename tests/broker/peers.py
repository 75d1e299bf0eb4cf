"""Upstream peers for the broker's fault and header tests, served on loopback in the test's loop.

These stand in for a PACS that misbehaves; the broker under test is real. ``RecordingPACS`` relays to
the real PACS (our own, unmodified) and records what the broker sent it; the fault peers refuse, answer
garbage, stall, answer 503, or cut a study retrieve in the middle.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import httpx
import tornado.web

from servers.runtime import ServerLoop, reserve

#: headers a misbehaving upstream adds to its answers; none may reach the broker's client
UPSTREAM_ONLY_HEADERS = {"Connection": "X-Internal-Route", "X-Internal-Route": "pacs-7",
                         "Keep-Alive": "timeout=5", "Set-Cookie": "pacs-session=secret",
                         "Proxy-Authenticate": "Basic", "Upgrade": "h2c"}


@dataclass
class Recorded:
    requests: list[dict[str, Any]] = field(default_factory=list)


class _Relay(tornado.web.RequestHandler):
    """Relays a GET to the real PACS; ``mode`` decides what happens to study retrieves."""

    def initialize(self, target: str, record: Recorded, mode: str, http: httpx.AsyncClient) -> None:
        self.target, self.record, self.mode, self.http = target, record, mode, http

    async def get(self, path: str) -> None:
        self.record.requests.append({"path": self.request.path, "query": self.request.query,
                                     "headers": dict(self.request.headers)})
        is_retrieve = not any(path.endswith(x) for x in ("/studies", "/series", "/instances", "/metadata"))
        if self.mode == "503":
            self.set_status(503)
            self.set_header("Retry-After", "7")
            self.finish("busy")
            return
        url = f"{self.target}{path}"
        accept = self.request.headers.get("Accept")
        params: list[tuple[str, Any]] = [(k, v.decode()) for k, vals in self.request.query_arguments.items()
                                         for v in vals]
        r = await self.http.get(url, params=params, headers={"Accept": accept} if accept else {})
        self.set_status(r.status_code)
        for name in ("content-type",):
            if name in r.headers:
                self.set_header(name, r.headers[name])
        if self.mode == "headers":
            for k, v in UPSTREAM_ONLY_HEADERS.items():
                self.set_header(k, v)
        body = r.content
        if self.mode.startswith("cut") and is_retrieve and r.status_code == 200:
            if self.mode.startswith("cut-length"):
                self.set_header("Content-Length", str(len(body)))
            self.write(body[: len(body) // 2])
            await self.flush()
            await asyncio.sleep(3.0 if self.mode.endswith("stall") else 0.05)
            self.request.connection.close()  # type: ignore[union-attr]
            self._auto_finish = False
            return
        self.finish(body)


def relay(loop: ServerLoop, target_dicomweb: str, mode: str = "plain") -> tuple[str, Recorded]:
    """A peer relaying to ``target_dicomweb``; returns its DICOMweb base and its record."""
    record = Recorded()

    def factory(url: str) -> tornado.web.Application:
        http = httpx.AsyncClient(timeout=30)
        kw = {"target": target_dicomweb, "record": record, "mode": mode, "http": http}
        return tornado.web.Application([(r"/dicom-web(/.*)", _Relay, kw)], s4s_cleanup=[http.aclose])

    served = loop.serve(factory)
    return served.url + "/dicom-web", record


def refused_url() -> str:
    """A loopback URL nobody listens on (the port was bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/dicom-web"


@dataclass
class RawPeers:
    """TCP peers that answer ``garbage`` (bytes that are not HTTP) or ``stall`` (never answer)."""

    loop: ServerLoop
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self, behaviour: str) -> str:
        res = reserve()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            try:
                await reader.readuntil(b"\r\n\r\n")
                if behaviour == "garbage":
                    writer.write(b"\x16\x03\x01 this is not HTTP at all \x00\xff\r\n\r\n")
                    await writer.drain()
                else:
                    await asyncio.sleep(60)
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()
                self.tasks.discard(task)

        async def start() -> asyncio.AbstractServer:
            return await asyncio.start_server(handle, sock=res.sockets[0])

        self.servers.append(self.loop.run(start()))
        return f"{res.url}/dicom-web"

    def close(self) -> None:
        async def close() -> None:
            for server in self.servers:
                server.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.sleep(0.05)

        self.loop.run(close())
