"""The machine's limits, so every throughput is also a fraction of what the hardware allows.

- Loopback: curl GETs a large file from the simplest fast server, an asyncio one that answers every
  request with ``loop.sendfile`` (zero-copy from the page cache), run as a subprocess
  (``python -m benchmarks.ceilings FILE``), with the unsent limit our PACS uses (``TCP_NOTSENT_LOWAT``,
  :func:`servers.runtime.limit_unsent`): without it the same server gave curl 2,134-2,316 MB/s
  and httpx 1,078-2,363, less than our PACS gives them with it.
- Disk: reading the data set's files (the same files both PACSes serve), cold (page cache dropped) and
  warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

from benchmarks.clients import curl_get, httpx_get
from benchmarks.stats import Figure
from benchmarks.systems import drop_caches, stop
from servers.runtime import limit_unsent


def ceiling_file(folder: Path, size: int = 1 << 30) -> Path:
    """A ``size``-byte file of random bytes under ``folder`` (written once)."""
    path = folder / f"ceiling-{size}.bin"
    if not path.exists() or path.stat().st_size != size:
        block = os.urandom(1 << 20)
        with path.open("wb") as f:
            for _ in range(size >> 20):
                f.write(block)
    return path


def loopback(folder: Path, rounds: int) -> list[Figure]:
    """curl, and the benchmark's httpx streaming client, each GETting the 1 GiB file from the sendfile
    server: the fastest each client reads on this machine, whatever the server (a retrieve with that
    client cannot be faster)."""
    path = ceiling_file(folder)
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.ceilings", str(path)], stdout=subprocess.PIPE,
                            text=True)
    mib = path.stat().st_size >> 20
    figures = [Figure("ceilings", f"loopback: curl GET of {mib} MiB from a sendfile server", "MB/s", "curl",
                      "", None),
               Figure("ceilings", f"httpx client ceiling: httpx streaming GET of {mib} MiB from the same "
                      "server", "MB/s", "httpx", "", None)]
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}/"
        with httpx.Client(timeout=300) as client:
            getters = [lambda: curl_get(url, "*/*"), lambda: httpx_get(client, url, "*/*")]
            for get in getters:
                get()  # warm
            pairs = list(zip(figures, getters, strict=True))
            for n in range(rounds):
                for fig, get in (pairs if n % 2 == 0 else pairs[::-1]):  # ABBA
                    size, seconds = get()
                    fig.ours.append(size / seconds / 1e6)
    finally:
        stop(proc)  # type: ignore[arg-type]
    for fig in figures:
        print(f"  {fig.name}: {fig.value(fig.ours):.0f} MB/s")
    return figures


def read_all(files: Iterable[Path]) -> float:
    buf = bytearray(1 << 20)
    total = 0
    start = time.perf_counter()
    for path in files:
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total / (time.perf_counter() - start) / 1e6


def disk(files: list[Path], rounds: int) -> list[Figure]:
    figures = []
    for cache in ("cold", "warm"):
        fig = Figure("ceilings", f"disk: reading {len(files)} of the data set's files, {cache} cache", "MB/s",
                     "read", "", None)
        if cache == "cold" and not drop_caches():
            fig.note = "skipped: dropping the page cache needs root"
        else:
            read_all(files)
            for _ in range(rounds):
                if cache == "cold":
                    drop_caches()
                fig.ours.append(read_all(files))
        figures.append(fig)
        print(f"  {fig.name}: {fig.value(fig.ours):.0f} MB/s")
    return figures


async def _serve(path: Path) -> None:
    size = path.stat().st_size
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n"
            "\r\n").encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        limit_unsent(writer.get_extra_info("socket"))
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")  # one request (any), one answer: the whole file
                writer.write(head)
                await writer.drain()
                with path.open("rb") as f:
                    await loop.sendfile(writer.transport, f)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(Path(sys.argv[1])))
