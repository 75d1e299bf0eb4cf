"""Whole-study WADO-RS retrieve through the FHIR broker vs straight from the PACS, side by side.

    .venv/bin/python -m benchmarks.bench_broker [--study-mb 2048] [--rounds 3] [--data-dir DIR]

What runs where (every role a real server on loopback):

- the PACS (``s4s-servers pacs``) and the broker (``s4s-servers broker``) each in a process of their own,
  so the broker's memory can be watched alone and no role shares a GIL with the client; the broker
  reaches the PACS over the PACS's Unix socket (``--pacs-link tcp``: over TCP loopback);
- the EHR and the token introspection service in this process (one introspection per retrieve);
- the client in this process: httpx streaming the whole study and discarding it (counting bytes).

One study of ``--study-mb`` megabytes (512x512 CT slices, 4 series) is generated from the demo plan
into the PACS's store (kept in ``--data-dir`` and reused by later runs). Each round retrieves the whole
study straight from the PACS and through the broker (a real access token from the EHR's launch), in
ABBA order;
the ratio of median throughputs is printed (target >= 0.90), along with the broker's resident memory
sampled every 0.1 s while it streams (flat: it must not grow with the study).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from benchmarks.systems import pacs_socket, start_broker_stack, start_pacs, stop
from servers.broker.app import quiet_httpx
from servers.demo_data.plan import DemoOptions, make_plan
from servers.pacs.seed import seed
from servers.pacs.store import Store
from servers.runtime import ServerLoop

INSTANCE_MB = 512 * 512 * 2 / 1e6
SERIES = 4


def plan_for(study_mb: int):  # type: ignore[no-untyped-def]
    per_series = max(1, round(study_mb / INSTANCE_MB / SERIES))
    return make_plan(DemoOptions(patients=1, studies_per_patient=(1, 1), series_per_study=(SERIES, SERIES),
                                 instances_per_series=(per_series, per_series), rows=512, columns=512,
                                 modalities=("CT",)))


def retrieve(url: str, headers: dict[str, str], mbps: float = 0.0) -> tuple[int, float]:
    """GET the whole study, discarding it; ``mbps`` > 0 reads no faster than that (a slow client)."""
    start = time.perf_counter()
    size = 0
    accept = {"Accept": 'multipart/related; type="application/dicom"'}
    with httpx.stream("GET", url, headers={**headers, **accept}, timeout=120) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():  # see benchmarks.clients.httpx_get
            size += len(chunk)
            if mbps:
                ahead = size / (mbps * 1e6) - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)
    return size, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study-mb", type=int, default=2048, help="size of the study (default 2048 MB)")
    ap.add_argument("--rounds", type=int, default=5, help="retrieves per path (default 5)")
    ap.add_argument("--slow-client-mbps", type=float, default=100.0,
                    help="then one more retrieve through the broker by a client reading this slowly, to "
                         "show back-pressure keeps the broker's memory flat (0: skip; default 100)")
    ap.add_argument("--pacs-link", choices=("unix", "tcp"), default="unix",
                    help="how the broker reaches the PACS: its Unix socket (default) or TCP loopback")
    ap.add_argument("--data-dir", help="where the generated PACS store is kept (default: a temporary folder)")
    args = ap.parse_args()
    quiet_httpx()

    work = Path(args.data_dir or tempfile.mkdtemp(prefix="s4s-bench-broker-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    plan = plan_for(args.study_mb)
    patient = plan.patients[0]
    study = patient.studies[0]
    pacs_dir = work / f"pacs-{args.study_mb}"
    t = time.perf_counter()
    store = Store(pacs_dir, fsync=False)
    added = seed(store, plan)
    store.close()
    print(f"study: {study.number_of_instances} instances, ~{args.study_mb} MB "
          f"({'generated in %.0f s' % (time.perf_counter() - t) if added else 'reused'}; {pacs_dir})")

    loop = ServerLoop().start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pacs_proc, pacs_url = start_pacs(pacs_dir, work)
        procs.append(pacs_proc)
        stack = start_broker_stack(loop, plan, work)
        link = pacs_socket(work) if args.pacs_link == "unix" else None
        broker_dicomweb = stack.start_broker(pacs_url, link)
        broker_proc = stack.brokers[-1]
        procs.append(broker_proc)
        auth = {"Authorization": f"Bearer {stack.token(plan, patient.id)}"}
        direct_url = f"{pacs_url}/studies/{study.study_uid}"
        broker_url = f"{broker_dicomweb}/studies/{study.study_uid}"

        broker_ps = psutil.Process(broker_proc.pid)
        pacs_ps = psutil.Process(pacs_proc.pid)
        me = psutil.Process()

        def cpu() -> tuple[float, float, float]:
            return tuple(sum(p.cpu_times()[:2]) for p in (pacs_ps, broker_ps, me))

        cpu_direct = [0.0, 0.0, 0.0]
        cpu_broker = [0.0, 0.0, 0.0]
        samples: list[int] = []
        sampling = threading.Event()

        def sample() -> None:
            while not done.is_set():
                if sampling.is_set():
                    samples.append(broker_ps.memory_info().rss)
                time.sleep(0.1)

        done = threading.Event()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        retrieve(broker_url, auth)  # warm-up: connections, caches, page cache
        idle_rss = broker_ps.memory_info().rss
        direct: list[float] = []
        through: list[float] = []
        size = size_b = 0
        broker_peaks: list[int] = []
        for n in range(args.rounds):
            # ABBA order (direct first in even rounds, the broker first in odd ones) so that drifting
            # background load does not favour one path
            for path in (("direct", "broker") if n % 2 == 0 else ("broker", "direct")):
                c0 = cpu()
                if path == "direct":
                    size, seconds = retrieve(direct_url, {})
                    direct.append(size / seconds / 1e6)
                else:
                    samples.clear()
                    sampling.set()
                    size_b, seconds = retrieve(broker_url, auth)
                    sampling.clear()
                    broker_peaks.append(max(samples) if samples else idle_rss)
                    through.append(size_b / seconds / 1e6)
                c1 = cpu()
                for i in range(3):
                    (cpu_direct if path == "direct" else cpu_broker)[i] += c1[i] - c0[i]
            assert size_b == size, (size_b, size)
            print(f"round {n + 1}: direct {direct[-1]:7.1f} MB/s   broker {through[-1]:7.1f} MB/s")
        slow_peak = 0
        if args.slow_client_mbps:
            samples.clear()
            sampling.set()
            slow_size, slow_seconds = retrieve(broker_url, auth, args.slow_client_mbps)
            sampling.clear()
            slow_peak = max(samples) if samples else 0
        done.set()
        sampler.join()
        ratio = statistics.median(through) / statistics.median(direct)
        best_ratio = max(through) / max(direct)
        peak = max(broker_peaks) if broker_peaks else idle_rss
        print(f"\nwhole-study retrieve, {size / 1e6:.0f} MB, median of {args.rounds}:")
        print(f"  straight from the PACS  {statistics.median(direct):7.1f} MB/s")
        print(f"  through the broker      {statistics.median(through):7.1f} MB/s")
        verdict = "met" if ratio >= 0.9 else "NOT met"
        print(f"  ratio broker/direct     {ratio:7.3f}   (target >= 0.90: {verdict})")
        print(f"  ratio of the best runs  {best_ratio:7.3f}")
        gb = size * args.rounds / 1e9
        print("CPU seconds per GB (pacs / broker / client): direct "
              + " / ".join(f"{c / gb:.2f}" for c in cpu_direct) + ", through the broker "
              + " / ".join(f"{c / gb:.2f}" for c in cpu_broker) + f" ({os.cpu_count()} CPUs)")
        print(f"broker RSS: idle {idle_rss / 2**20:.0f} MiB, peak while streaming {peak / 2**20:.0f} MiB "
              f"(+{(peak - idle_rss) / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB study, "
              f"{len(samples)} samples in the last)")
        if args.slow_client_mbps:
            print(f"broker RSS with a client reading at {args.slow_client_mbps:.0f} MB/s "
                  f"({slow_size / slow_seconds / 1e6:.0f} MB/s achieved): peak {slow_peak / 2**20:.0f} MiB "
                  f"(+{(slow_peak - idle_rss) / 2**20:.0f} MiB over idle)")
    finally:
        for p in procs:
            stop(p)
        loop.stop()


if __name__ == "__main__":
    main()
