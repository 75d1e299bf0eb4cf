"""Retrieving a multi-series study to disk and into pydicom: the kit vs dicomweb-client vs curl, one run.

The PACS of this project serves one deterministic study (``--series`` series of ``--instances`` CT
instances of ``--size`` x ``--size`` pixels) on loopback, in this process. Each client runs in its own
subprocess, so its peak memory (``ru_maxrss``) is its own:

- ``kit``: :meth:`s4s_jupyter.DICOMweb.download` (streams each series' multipart answer to files, in
  parallel, ``--connections`` per host, a CRC-32 per file, the default);
- ``dicomweb-client``: ``DICOMwebClient.retrieve_study`` (the whole study into pydicom Datasets), then
  each Dataset written with ``save_as`` into the same layout: what a user of that library does to get the
  study on disk;
- ``curl``: the whole study in one request written to one file unparsed (the single-connection loopback
  limit), and the series in parallel (``curl --parallel``, as many connections as the kit);
- into memory: :meth:`s4s_jupyter.DICOMweb.retrieve` (pydicom Datasets) vs ``retrieve_study``.

Every Python client runs ``gc.collect()`` after its imports and before its timer: importing pandas,
pydicom and the client leaves the cyclic garbage collector a full collection due (22-29 ms here), which
the first call that allocates many objects pays. The kit's script imports more modules than
dicomweb-client's, so without it the two were timed under different loads (dicomweb-client's
``retrieve_study`` of a 27 MB study took 206-210 ms after the kit's imports, 170-178 ms after its own).

Each client runs ``--repeat`` times; the median time is reported, with throughput and ratios against the
baselines measured in the same run. Targets (issue 5): kit >= 2x dicomweb-client, kit >= 0.5x curl.

    .venv/bin/python benchmarks/bench_kit.py [--series 6 --instances 40 --size 512 --repeat 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'

KIT = r"""
import gc, json, resource, sys, time
import pandas, pydicom, httpx, tqdm.auto, dicomweb_client  # imports are not what is measured
from s4s_jupyter.client import auth, dicomweb, part10, retrieve
from s4s_jupyter import DICOMweb
url, study, out, connections, what = sys.argv[1:6]
gc.collect()  # what the imports left for the collector is theirs, not the call's
t = time.perf_counter()
with DICOMweb(url, connections_per_host=int(connections)) as pacs:
    target = study if what == "study" else pacs.series(study).iloc[:1]
    manifest = pacs.download(target, out, progress=False)
elapsed = time.perf_counter() - t
assert set(manifest["status"]) == {"downloaded"}, manifest["status"].value_counts()
print(json.dumps({"seconds": elapsed, "bytes": int(manifest["size"].sum()), "files": len(manifest),
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

DWC = r"""
import gc, json, resource, sys, time
from pathlib import Path
import pandas, pydicom, httpx  # imports are not what is measured
from dicomweb_client import DICOMwebClient
url, study, out = sys.argv[1:4]
gc.collect()  # what the imports left for the collector is theirs, not the call's
t = time.perf_counter()
client = DICOMwebClient(url)
datasets = client.retrieve_study(study)
total = 0
for ds in datasets:
    folder = Path(out) / str(ds.PatientID) / ds.StudyInstanceUID / ds.SeriesInstanceUID
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    total += path.stat().st_size
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed, "bytes": total, "files": len(datasets),
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


KIT_DATASETS = r"""
import gc, json, resource, sys, time
import pandas, pydicom, httpx, tqdm.auto, dicomweb_client  # imports are not what is measured
from s4s_jupyter.client import auth, dicomweb, part10, retrieve
from s4s_jupyter import DICOMweb
url, study, connections = sys.argv[1:4]
gc.collect()  # what the imports left for the collector is theirs, not the call's
t = time.perf_counter()
with DICOMweb(url, connections_per_host=int(connections)) as pacs:
    datasets = pacs.retrieve(study, progress=False)
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed, "files": len(datasets),
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

DWC_DATASETS = r"""
import gc, json, resource, sys, time
import pandas, pydicom, httpx  # imports are not what is measured
from dicomweb_client import DICOMwebClient
url, study = sys.argv[1:3]
gc.collect()  # what the imports left for the collector is theirs, not the call's
t = time.perf_counter()
datasets = DICOMwebClient(url).retrieve_study(study)
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed, "files": len(datasets),
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def new_folders(root: Path) -> Callable[[str], Path]:
    """``fresh(name)``: a new folder under ``root`` for one run, never one used before. The caller removes
    them all after its timed runs, not before each run: deleting hundreds of files just before writing as
    many makes ext4 (without a journal, as here) step over the recently freed inodes while it allocates
    new ones (``recently_deleted`` under ``find_inode_bit``): creating 200 files took 17 ms instead of
    6-8, a cost of the benchmark's cleanup, not of the clients."""
    made = itertools.count()
    return lambda name: root / f"{name}-{next(made)}"


def run_python(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run_curl(urls: list[str], out: Path, parallel: int) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["/usr/bin/time", "-f", "%M", "curl", "-sS", "--fail", "-H", f"Accept: {ACCEPT}"]
    if len(urls) > 1:
        cmd += ["--parallel", "--parallel-max", str(parallel)]
    for n, url in enumerate(urls):
        cmd += ["-o", str(out / f"part{n}.multipart"), url]
    t = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    size = sum(p.stat().st_size for p in out.iterdir())
    return {"seconds": elapsed, "bytes": size, "files": len(urls),
            "peak_rss": int(done.stderr.strip().splitlines()[-1]) * 1024}


def figures(url: str, study_uid: str, study_bytes: int, large_uid: str, large_bytes: int, work: Path,
            rounds: int, connections: int = 4) -> list[Any]:
    """The kit's figures for :mod:`benchmarks.run` (issue 8), each against its baseline in the same run.

    MB/s are the study's stored bytes over each client's time, so clients are compared on the same work.
    """
    from benchmarks.stats import Figure, Target

    fresh = new_folders(work)

    def mbps(result: dict[str, float], size: int = study_bytes) -> float:
        return size / result["seconds"] / 1e6

    study_url = f"{url}/studies/{study_uid}"
    rows = [
        ("study to disk", "kit download", "dicomweb-client retrieve_study + save_as",
         Target(">=", 2.0, "kit >= 2 x dicomweb-client"),
         lambda: run_python(KIT, url, study_uid, str(fresh("kit")), str(connections), "study"),
         lambda: run_python(DWC, url, study_uid, str(fresh("dwc")))),
        ("study into pydicom datasets", "kit retrieve", "dicomweb-client retrieve_study",
         Target(">=", 2.0, "kit >= 2 x dicomweb-client"),
         lambda: run_python(KIT_DATASETS, url, study_uid, str(connections)),
         lambda: run_python(DWC_DATASETS, url, study_uid)),
        ("study to disk vs curl", "kit download", "curl (one request, to one file)",
         Target(">=", 0.5, "kit >= 0.5 x curl"),
         lambda: run_python(KIT, url, study_uid, str(fresh("kit")), str(connections), "study"),
         lambda: run_curl([study_url], fresh("curl"), 1)),
    ]
    out: list[Any] = []
    memory: dict[str, list[float]] = {}
    for name, ours_label, base_label, target, ours, base in rows:
        fig = Figure("kit", f"multi-series study ({study_bytes / 1e6:.0f} MB) {name}", "MB/s", ours_label,
                     base_label, target)
        for n in range(rounds):
            order = [(ours, fig.ours, ours_label), (base, fig.baseline, base_label)]
            for run, samples, label in (order if n % 2 == 0 else order[::-1]):
                # the earlier runs' files written back to disk now, not by the kernel's flusher during
                # this run (as the files are kept, their dirty pages would be, on whoever runs then)
                os.sync()
                result = run()
                samples.append(mbps(result))
                memory.setdefault(f"{name}: {label}", []).append(result["peak_rss"] / 2**20)
        out.append(fig)
        print(f"  {fig.name}: {fig.value(fig.ours):.0f} vs {fig.value(fig.baseline):.0f} MB/s")
    datasets = Figure("memory", f"client peak RSS, study ({study_bytes / 1e6:.0f} MB) into pydicom datasets",
                      "MiB", "kit retrieve", "dicomweb-client retrieve_study", None, stat="max",
                      ours=memory["study into pydicom datasets: kit retrieve"],
                      baseline=memory["study into pydicom datasets: dicomweb-client retrieve_study"])
    large = Figure("memory", f"kit download peak RSS: {large_bytes / 1e6:.0f} MB study vs "
                   f"{study_bytes / 1e6:.0f} MB study", "MiB", f"{large_bytes / 1e6:.0f} MB study",
                   f"{study_bytes / 1e6:.0f} MB study",
                   Target("<=", 1.25, "bounded: peak(large) <= 1.25 x peak(ordinary)"), stat="max",
                   baseline=memory["study to disk: kit download"])
    shutil.rmtree(work, ignore_errors=True)
    for _ in range(rounds):  # memory only: each run's files removed before the next
        shutil.rmtree(work / "kit-large", ignore_errors=True)
        result = run_python(KIT, url, large_uid, str(work / "kit-large"), str(connections), "study")
        large.ours.append(result["peak_rss"] / 2**20)
        large.note = f"kit download of the large study: {mbps(result, large_bytes):.0f} MB/s"
    shutil.rmtree(work, ignore_errors=True)
    os.sync()  # the deletions written back (see run.py's end)
    print(f"  {large.name}: {large.value(large.ours):.0f} vs {large.value(large.baseline):.0f} MiB")
    return [*out, datasets, large]


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, default=6)
    p.add_argument("--instances", type=int, default=40, help="instances per series")
    p.add_argument("--size", type=int, default=512, help="rows = columns of each CT image")
    p.add_argument("--connections", type=int, default=4, help="the kit's connections per host")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()

    from servers.demo_data.dicom import iter_study
    from servers.demo_data.plan import DemoOptions, make_plan
    from servers.pacs.app import dicomweb_url, make_app
    from servers.pacs.seed import seed
    from servers.pacs.settings import PACSSettings
    from servers.runtime import ServerLoop

    plan = make_plan(DemoOptions(seed=7, patients=1, studies_per_patient=(1, 1),
                                 series_per_study=(args.series, args.series),
                                 instances_per_series=(args.instances, args.instances),
                                 rows=args.size, columns=args.size, modalities=("CT",)))
    study = plan.patients[0].studies[0]
    work = Path(tempfile.mkdtemp(prefix="s4s-bench-"))
    loop = ServerLoop().start()
    try:
        settings = PACSSettings(data_dir=work / "pacs", fsync=False)
        served = loop.serve(lambda url: make_app(settings, url))
        t = time.perf_counter()
        seed(served.app.settings["pacs"].store, plan)
        url = dicomweb_url(served.url)
        print(f"PACS at {url}: study of {len(study.series)} series x {args.instances} instances "
              f"({args.size}x{args.size} CT) stored in {time.perf_counter() - t:.1f} s")
        study_url = f"{url}/studies/{study.study_uid}"
        study_bytes = sum(len(b) for _, b in iter_study(plan.patients[0], study))
        series_urls = [f"{study_url}/series/{s.series_uid}" for s in study.series]

        results: dict[str, list[dict[str, float]]] = {}

        fresh = new_folders(work / "out")

        for _ in range(args.repeat):  # interleaved, so drift hits every client alike
            results.setdefault("kit", []).append(run_python(KIT, url, study.study_uid, str(fresh("kit")),
                                                            str(args.connections), "study"))
            results.setdefault("dicomweb-client", []).append(run_python(DWC, url, study.study_uid,
                                                                        str(fresh("dwc"))))
            results.setdefault("curl (1 request)", []).append(run_curl([study_url], fresh("curl1"), 1))
            results.setdefault(f"curl (--parallel {args.connections})", []).append(
                run_curl(series_urls, fresh("curlp"), args.connections))
            kit_ds = run_python(KIT_DATASETS, url, study.study_uid, str(args.connections))
            results.setdefault("kit retrieve (datasets)", []).append({**kit_ds, "bytes": study_bytes})
            dwc_ds = run_python(DWC_DATASETS, url, study.study_uid)
            results.setdefault("dicomweb-client retrieve_study", []).append({**dwc_ds, "bytes": study_bytes})
        one_series = run_python(KIT, url, study.study_uid, str(fresh("kit1")), str(args.connections),
                                "series")
    finally:
        loop.stop()
        shutil.rmtree(work, ignore_errors=True)

    med = {name: median(runs) for name, runs in results.items()}
    kit = med["kit"]
    print(f"\n{'client':32} {'median s':>9} {'MB/s':>8} {'files':>6} {'peak RSS MB':>12} "
          f"{'kit speed-up':>13}")
    for name, m in med.items():
        mbps = m["bytes"] / m["seconds"] / 1e6
        print(f"{name:32} {m['seconds']:9.2f} {mbps:8.1f} {int(m['files']):6d} {m['peak_rss'] / 1e6:12.1f} "
              f"{m['seconds'] / kit['seconds']:12.2f}x")
    in_memory = med["dicomweb-client retrieve_study"]["seconds"] / med["kit retrieve (datasets)"]["seconds"]
    print(f"\nkit retrieve vs dicomweb-client retrieve_study (pydicom Datasets): {in_memory:.2f}x faster "
          f"(target >= 2x) {'OK' if in_memory >= 2 else 'MISSED'}")
    dwc = med["dicomweb-client"]["seconds"] / kit["seconds"]
    curl_best = min(m["seconds"] for name, m in med.items() if name.startswith("curl"))
    vs_curl = curl_best / kit["seconds"]
    print(f"kit vs dicomweb-client: {dwc:.2f}x faster (target >= 2x) {'OK' if dwc >= 2 else 'MISSED'}")
    print(f"kit vs curl (fastest curl): {vs_curl:.2f}x of its speed (target >= 0.5x) "
          f"{'OK' if vs_curl >= 0.5 else 'MISSED'}")
    print(f"kit peak RSS: whole study ({kit['bytes'] / 1e6:.0f} MB) {kit['peak_rss'] / 1e6:.0f} MB; "
          f"one series ({one_series['bytes'] / 1e6:.0f} MB) {one_series['peak_rss'] / 1e6:.0f} MB; "
          f"dicomweb-client {med['dicomweb-client']['peak_rss'] / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
