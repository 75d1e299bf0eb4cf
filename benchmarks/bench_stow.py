"""STOW-RS (PS3.18 10.5) instances/s with 1 and 4 connections: our PACS vs Orthanc.

The instances stored are copies of one generated series with fresh Study/Series/SOP Instance UIDs (and
a PatientID of their own, so the other figures' queries do not see them), built before the clock starts:
each request carries one new study of ``batch`` instances; ``connections`` threads send the requests,
one httpx connection each.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import pydicom
from pydicom.uid import generate_uid

from benchmarks.stats import Figure, Target

NOT_BEHIND = Target(">=", 1.0, "ours >= Orthanc")
PATIENT_ID = "BENCH-STOW"


def copies(files: list[Path], batch: int) -> list[tuple[str, bytes]]:
    """``(content type, multipart body)`` per request: ``files`` re-identified, ``batch`` per study."""
    bodies = []
    for start in range(0, len(files), batch):
        study, series = generate_uid(), generate_uid()
        boundary = generate_uid().replace(".", "")
        out = io.BytesIO()
        for path in files[start:start + batch]:
            ds = pydicom.dcmread(path)
            ds.PatientID = PATIENT_ID
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            part = io.BytesIO()
            ds.save_as(part, enforce_file_format=True)
            out.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            out.write(part.getvalue())
            out.write(b"\r\n")
        out.write(f"--{boundary}--\r\n".encode())
        bodies.append((f'multipart/related; type="application/dicom"; boundary={boundary}', out.getvalue()))
    return bodies


def pieces(body: bytes, size: int = 256 * 1024) -> Iterator[memoryview]:
    """The body as views of ``size`` bytes: httpcore sends a buffer with ``send`` and keeps
    ``buffer[n:]`` for the next call, a copy of the rest of a ``bytes`` body after every ``send`` (into
    fresh memory, for bodies of megabytes); a view's slice copies nothing. The same for both servers."""
    view = memoryview(body)
    for start in range(0, len(view), size):
        yield view[start:start + size]


def store(base: str, bodies: list[tuple[str, bytes]], connections: int, instances: int) -> float:
    """POST every body to ``{base}/studies`` over ``connections`` connections; instances per second.

    The clients are built before the clock starts: an ``httpx.Client`` costs about 40 ms of CPU (its TLS
    context), which inside the timed window added a fixed ~0.1 s per 4-connection sample whatever the
    server (first runs: 1.1 s of client CPU per 500 instances with 4 connections, 0.2 s with 1)."""
    work: queue.Queue[tuple[str, bytes]] = queue.Queue()
    for b in bodies:
        work.put(b)
    errors: list[str] = []
    clients = [httpx.Client(timeout=300) for _ in range(connections)]
    ready = threading.Barrier(connections + 1)

    def sender(client: httpx.Client) -> None:
        ready.wait()
        while True:
            try:
                ctype, body = work.get_nowait()
            except queue.Empty:
                return
            # views, not bytes (see pieces); httpx sends any buffer, its annotation says bytes
            r = client.post(f"{base}/studies", content=cast(Iterator[bytes], pieces(body)),
                            headers={"Content-Type": ctype, "Accept": "application/dicom+json",
                                     "Content-Length": str(len(body))})
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=sender, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    for c in clients:
        c.close()
    if errors:
        raise SystemExit(f"STOW-RS to {base} failed: {errors[0]}")
    return instances / seconds


def stow(ours: str, orthanc: str, files: list[Path], batch: int, rounds: int) -> list[Figure]:
    figures = []
    for connections in (1, 4):
        fig = Figure("STOW-RS", f"store, {connections} connection{'s' if connections > 1 else ''} "
                     f"({len(files)} instances, {batch} per request)", "instances/s", "our PACS", "Orthanc",
                     NOT_BEHIND)
        for n in range(rounds):
            order = [(ours, fig.ours), (orthanc, fig.baseline)]
            for base, samples in (order if n % 2 == 0 else order[::-1]):
                bodies = copies(files, batch)  # fresh UIDs for every store; built before the clock starts
                samples.append(store(base, bodies, connections, len(files)))
        figures.append(fig)
        print(f"  {fig.name}: {fig.value(fig.ours):.0f} vs {fig.value(fig.baseline):.0f} instances/s")
    return figures
