"""WADO-RS whole-study retrieve (PS3.18 10.4.1): our PACS vs Orthanc, through our broker vs our PACS,
concurrent retrieves, and server memory while moving a large study.

A sample moves several whole studies one after the other (so that each sample lasts long enough to
time) and gives MB/s over them. Warm samples follow one untimed pass that fills the page cache; cold
samples drop the page cache before each (root only; otherwise the figure is skipped and says why).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from benchmarks.clients import DICOM_MULTIPART, DICOM_MULTIPART_ANY, curl_get, curl_parallel, httpx_get
from benchmarks.stats import Figure, Target, interleave
from benchmarks.systems import PeakRSS, drop_caches

AHEAD = Target(">=", 1.2, "ours >= 1.2 x Orthanc")
NOT_BEHIND = Target(">=", 1.0, "ours >= Orthanc")
BROKER = Target(">=", 0.9, "broker >= 0.9 x PACS direct")
BOUNDED = Target("<=", 1.25, "bounded: peak(large) <= 1.25 x peak(ordinary)")


@dataclass(frozen=True)
class Server:
    """A DICOMweb origin server under test: its base URL and the pid whose memory is sampled."""

    name: str
    base: str
    pid: int


Getter = Callable[[str], tuple[int, float]]


def mbps(get: Getter, urls: list[str], evict: str | None = None) -> Callable[[], float]:
    """MB/s of ``get`` over ``urls``; with ``evict`` (a URL) a cold sample: first the server's own cache
    is flushed by pulling ``evict`` (Orthanc 1.10 keeps up to 128 MB of files in RAM,
    ``MaximumStorageCacheSize``), then the kernel's page cache is dropped."""
    def sample() -> float:
        if evict:
            curl_get(evict)
            drop_caches()
        total = seconds = 0.0
        for url in urls:
            size, t = get(url)
            total += size
            seconds += t
        return total / seconds / 1e6
    return sample


def whole_study(ours: Server, orthanc: Server, study_uids: list[str], evict_uid: str, rounds: int
                ) -> list[Figure]:
    """Whole-study retrieve MB/s with curl and httpx, both transfer-syntax choices, warm and cold.

    ``evict_uid``: a study larger than any server-side cache, pulled before each cold sample."""
    figures = []
    client = httpx.Client(timeout=300)
    cold_ok = drop_caches()
    clients: dict[str, Callable[[str], Getter]] = {
        "curl": lambda accept: lambda url: curl_get(url, accept),
        "httpx": lambda accept: lambda url: httpx_get(client, url, accept),
    }
    for cache in ("warm", "cold"):
        for tool, make in clients.items():
            for ts, accept in (("default", DICOM_MULTIPART), ("*", DICOM_MULTIPART_ANY)):
                if cache == "cold" and ts == "*":
                    continue  # both servers send the stored files unchanged either way; once is enough
                fig = Figure("WADO-RS retrieve", f"whole study, {tool}, transfer-syntax {ts}, {cache} cache",
                             "MB/s", "our PACS", "Orthanc", AHEAD)
                if cache == "cold" and not cold_ok:
                    fig.note = "skipped: dropping the page cache needs root"
                    figures.append(fig)
                    continue
                get = make(accept)
                urls = {s: [f"{s.base}/studies/{uid}" for uid in study_uids] for s in (ours, orthanc)}
                if cache == "warm":
                    for s in (ours, orthanc):
                        mbps(get, urls[s])()
                evict = {s: f"{s.base}/studies/{evict_uid}" if cache == "cold" else None
                         for s in (ours, orthanc)}
                interleave(rounds, mbps(get, urls[ours], evict[ours]),
                           mbps(get, urls[orthanc], evict[orthanc]), fig)
                figures.append(fig)
                print(f"  {fig.name}: {fig.value(fig.ours):.0f} vs {fig.value(fig.baseline):.0f} MB/s")
    client.close()
    return figures


def concurrent(ours: Server, orthanc: Server, study_uids: list[str], rounds: int) -> list[Figure]:
    """4 and 8 whole studies at once (curl --parallel, one connection each), warm, total MB/s."""
    figures = []
    for n in (4, 8):
        uids = [study_uids[i % len(study_uids)] for i in range(n)]
        fig = Figure("WADO-RS retrieve", f"{n} concurrent whole-study retrieves (curl), warm", "MB/s",
                     "our PACS", "Orthanc", NOT_BEHIND)

        def sample(server: Server, uids: list[str] = uids) -> Callable[[], float]:
            def run() -> float:
                size, seconds = curl_parallel([f"{server.base}/studies/{u}" for u in uids])
                return size / seconds / 1e6
            return run

        sample(ours)()
        sample(orthanc)()
        figures.append(interleave(rounds, sample(ours), sample(orthanc), fig))
        print(f"  {fig.name}: {fig.value(fig.ours):.0f} vs {fig.value(fig.baseline):.0f} MB/s")
    return figures


def broker(pacs: str, broker_base: str, token: str, study_uids: list[str], rounds: int, link: str,
           target: bool) -> list[Figure]:
    """The same studies through the broker (a valid token, re-authorized on every request) vs straight
    from our PACS, with curl and with the httpx client (as the issue's whole-study row): two figures.
    ``link`` says how the broker reaches the PACS; ``target``: whether the issue's target applies (see
    benchmarks.run: to the broker answering from the PACS's store; the others are reported)."""
    client = httpx.Client(timeout=300)
    auth = {"Authorization": f"Bearer {token}"}
    getters: dict[str, Callable[[dict[str, str]], Getter]] = {
        "curl": lambda headers: lambda url: curl_get(url, headers=headers),
        "httpx": lambda headers: lambda url: httpx_get(client, url, headers=headers),
    }
    figures = []
    for tool, make in getters.items():
        fig = Figure("WADO-RS retrieve", f"whole study through our broker ({tool}, valid token; broker to "
                     f"PACS: {link}), warm", "MB/s", "broker", "PACS direct", BROKER if target else None)

        def via(base: str, headers: dict[str, str], make: Callable[[dict[str, str]], Getter] = make
                ) -> Callable[[], float]:
            return mbps(make(headers), [f"{base}/studies/{u}" for u in study_uids])

        via(broker_base, auth)()
        via(pacs, {})()
        interleave(rounds, via(broker_base, auth), via(pacs, {}), fig)
        figures.append(fig)
        print(f"  {fig.name}: {fig.value(fig.ours):.0f} vs {fig.value(fig.baseline):.0f} MB/s")
    client.close()
    return figures


def server_memory(servers: list[Server], large_uid: str, large_mb: float, ordinary_uid: str,
                  ordinary_mb: float, rounds: int) -> list[Figure]:
    """Peak RSS of each server process while curl pulls the large study, beside an ordinary one."""
    figures = []
    for s in servers:
        fig = Figure("memory", f"{s.name} server peak RSS: {large_mb:.0f} MB study vs {ordinary_mb:.0f} MB "
                     "study", "MiB", f"{large_mb:.0f} MB study", f"{ordinary_mb:.0f} MB study", BOUNDED,
                     stat="max")

        def peak(uid: str, s: Server = s) -> Callable[[], float]:
            def run() -> float:
                with PeakRSS(s.pid) as m:
                    curl_get(f"{s.base}/studies/{uid}", DICOM_MULTIPART)
                return m.peak / 2**20
            return run

        figures.append(interleave(rounds, peak(large_uid), peak(ordinary_uid), fig))
        print(f"  {fig.name}: {fig.value(fig.ours):.0f} vs {fig.value(fig.baseline):.0f} MiB")
    return figures
