"""Our servers and kit side by side with Orthanc, dicomweb-client and curl, in one run (issue 8).

    make bench                                   # the default data set, about 2 GB (+ a 2 GB study)
    .venv/bin/python -m benchmarks.run --size small
    .venv/bin/python -m benchmarks.run --patients 4 --series 3 --instances 50 --rows 256 --only retrieve,query

Steps: generate the data set with the project's generator (once, cached under ``--cache``); load the same
files into our PACS (its store's ``put``) and into a private Orthanc (``POST /instances``); start our PACS
and broker as subprocesses and the EHR in this process; measure every group with the systems
interleaved; write ``{results}/bench-*.md`` and ``.json`` (and ``latest.*``). Dropping the page cache
for the cold figures needs root; the figures say when they were skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import bench_fhir, bench_kit, bench_query, bench_retrieve, bench_stow, ceilings, report
from benchmarks.bench_retrieve import Server
from benchmarks.dataset import SIZES, build
from benchmarks.stats import Figure, stopwatch
from benchmarks.systems import (
    load_orthanc,
    load_pacs,
    pacs_handoff,
    pacs_socket,
    start_broker_stack,
    start_pacs,
    stop,
)
from servers.broker.app import quiet_httpx
from servers.runtime import ServerLoop
from tests.support.orthanc import OrthancServer

GROUPS = ("ceilings", "retrieve", "query", "memory", "kit", "broker", "fhir", "stow")
ROOT = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="default",
                   help="default: 10 patients x 2 studies x 2 series x 100 CT 512x512 (~2 GB) and a 2 GB "
                        "study; small: 4 x 2 x 2 x 100 of 256x256 and a 256 MB study")
    for name in ("patients", "studies", "series", "instances", "rows", "large_mb"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"override the size's {name}")
    p.add_argument("--rounds", type=int, default=5, help="repeats of each throughput figure (default 5)")
    p.add_argument("--requests", type=int, default=40, help="requests per latency figure (default 40)")
    p.add_argument("--observations", type=int, default=100_000, help="Observations for the FHIR figure")
    p.add_argument("--fhir-page", type=int, default=100, help="_count of the FHIR search (default 100)")
    p.add_argument("--unsent-limit", type=int, metavar="BYTES",
                   help="our PACS's --unsent-limit (default: the PACS's own default; 0: no limit)")
    p.add_argument("--only", help=f"comma-separated groups to run (of {', '.join(GROUPS)})")
    p.add_argument("--cache", type=Path, default=ROOT / "results" / "cache", help="data set cache folder")
    p.add_argument("--results", type=Path, default=ROOT / "results", help="where the results are written")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    args.cache, args.results = args.cache.resolve(), args.results.resolve()  # servers run in other folders
    quiet_httpx()
    groups = set(args.only.split(",")) if args.only else set(GROUPS)
    if groups - set(GROUPS):
        raise SystemExit(f"unknown groups: {', '.join(sorted(groups - set(GROUPS)))}")
    names = ("patients", "studies", "series", "instances", "rows", "large_mb")
    overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    shape = dataclasses.replace(SIZES[args.size], **overrides)
    # the broker rows take twice the repeats: they spread the most (docs/benchmarks.md)
    rounds, few, broker_rounds = args.rounds, min(args.rounds, 3), 2 * args.rounds
    print(f"data set {shape.key} in {args.cache}")
    ds = build(shape, args.cache)
    studies = [s for _, s in ds.studies]
    study, large = studies[0], ds.large_study
    study_bytes, large_bytes = ds.size_bytes(study), ds.size_bytes(large)
    total = ds.size_bytes()
    print(f"  {len(studies)} studies of {study_bytes / 1e6:.0f} MB and one of {large_bytes / 1e6:.0f} MB: "
          f"{total / 1e9:.2f} GB")

    figures: list[Figure] = []
    args.results.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=args.results))
    loop = ServerLoop().start()
    orthanc = OrthancServer(work / "orthanc")
    procs = []
    try:
        if "ceilings" in groups:
            print("ceilings")
            figures += ceilings.loopback(args.cache, rounds)
            figures += ceilings.disk(list(ds.files(study)), few)
        print("loading the same files into both PACSes")
        with stopwatch() as t_pacs:
            n = load_pacs(work / "pacs", ds.files())
        orthanc.start()
        with stopwatch() as t_orthanc:
            load_orthanc(orthanc, ds.files())
        with stopwatch() as t_sync:  # both stores on disk now, not written back during the first figures
            os.sync()
        print(f"  our PACS store: {n} files in {t_pacs():.0f} s; Orthanc: {t_orthanc():.0f} s; "
              f"written back in {t_sync():.0f} s")
        extra = [] if args.unsent_limit is None else ["--unsent-limit", str(args.unsent_limit)]
        pacs_proc, pacs_url = start_pacs(work / "pacs", work, extra)
        procs.append(pacs_proc)
        assert orthanc.pid is not None
        ours, theirs = Server("our PACS", pacs_url, pacs_proc.pid), Server("Orthanc", orthanc.dicomweb_url,
                                                                              orthanc.pid)
        # a sample moves at least 4 studies and ~400 MB (studies repeated if need be), long enough to time
        per_sample = max(4, math.ceil(400e6 / study_bytes))
        retrieve_uids = [studies[i % len(studies)].study_uid for i in range(per_sample)]
        if "retrieve" in groups:
            print(f"WADO-RS retrieve ({len(retrieve_uids)} studies per sample)")
            figures += bench_retrieve.whole_study(ours, theirs, retrieve_uids, large.study_uid, rounds)
            figures += bench_retrieve.concurrent(ours, theirs, [s.study_uid for s in studies], rounds)
        if "query" in groups:
            print("QIDO-RS and metadata")
            patient = ds.plan.patients[0]
            dates = sorted(s.started.strftime("%Y%m%d") for s in [*studies, large])
            lo, hi = dates[0], dates[len(dates) // 2]
            in_range = sum(lo <= d <= hi for d in dates)
            figures += bench_query.queries(pacs_url, orthanc.dicomweb_url, patient.mrn,
                                           (f"{lo}-{hi}", in_range), study.study_uid,
                                           study.series[0].series_uid,
                                           len(study.series[0].instance_uids), args.requests)
        if "memory" in groups:
            print("server memory")
            figures += bench_retrieve.server_memory([ours, theirs], large.study_uid, large_bytes / 1e6,
                                                    study.study_uid, study_bytes / 1e6, few)
        if "kit" in groups:
            print("kit")
            figures += bench_kit.figures(pacs_url, study.study_uid, study_bytes, large.study_uid, large_bytes,
                                         work / "kit", rounds)
        if groups & {"broker", "fhir"}:
            stack = start_broker_stack(loop, ds.plan, work)
            patient = ds.plan.patients[0]
            token = stack.token(ds.plan, patient.id)
            if "broker" in groups:
                print("broker")
                # the token's patient's studies, repeated to the whole-study rows' sample size
                uids = [patient.studies[i % len(patient.studies)].study_uid for i in range(per_sample)]
                # the target applies to the broker answering retrieves in its own process from the PACS's
                # store (one server process per request, as from the PACS direct); the handoff (two
                # processes per request, ahead with many concurrent clients) and the relays over a Unix
                # socket and over TCP are reported beside it (docs/benchmarks.md)
                links = (("in-process", pacs_socket(work), None, work / "pacs"),
                         ("handoff", pacs_socket(work), pacs_handoff(work), None),
                         ("Unix socket", pacs_socket(work), None, None), ("TCP", None, None, None))
                for link, socket_path, handoff, store in links:
                    broker_dicomweb = stack.start_broker(pacs_url, socket_path, handoff, store)
                    procs.append(stack.brokers[-1])
                    figures += bench_retrieve.broker(pacs_url, broker_dicomweb, token, uids, broker_rounds,
                                                     link, target=store is not None)
            if "fhir" in groups:
                print(f"FHIR ({args.observations} Observations)")
                with stopwatch() as t_obs:
                    bench_fhir.add_observations(work / "ehr", ds.plan, patient.id, args.observations)
                print(f"  stored in the EHR in {t_obs():.0f} s")
                figures.append(bench_fhir.search(stack.ehr + "/fhir", patient.id, token, args.fhir_page, few))
        if "stow" in groups:
            print("STOW-RS")
            files = list(ds.files(studies[-1]))[:100]
            figures += bench_stow.stow(pacs_url, orthanc.dicomweb_url, files, 10, few)
        info = {"finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "data_set": shape.key,
                "data_set_bytes": total, "shape": dataclasses.asdict(shape), "rounds": rounds,
                "broker_rounds": broker_rounds, "few_rounds": few,
                "requests": args.requests, "machine": report.machine(),
                "versions": report.versions(orthanc.url)}
    finally:
        for p in procs:
            stop(p)
        orthanc.stop()
        loop.stop()
        time.sleep(0.2)
        shutil.rmtree(work, ignore_errors=True)
        # written back now: ext4 without a journal (this machine) avoids reusing a deleted inode for 60 s,
        # 360 s while its inode table block is not yet written back, and steps over such inodes one by one
        # when it creates files; a run started soon after this one would pay for these deletions
        os.sync()
    md, js = report.write(args.results, figures, info)
    print()
    print(md.read_text())
    print(f"written: {md}\n         {js}")


if __name__ == "__main__":
    main()
