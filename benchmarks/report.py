"""The run's results: a Markdown table and a JSON file (every figure's samples and min/median/max, the
machine, the versions of everything measured)."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.stats import Figure

PACKAGES = ("s4s-jupyter", "tornado", "httpx", "pydicom", "numpy", "pandas", "dicomweb-client", "psutil")


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = round(psutil.virtual_memory().total / 2**30, 1)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory,
            "kernel": platform.release(), "os": platform.platform(), "root": os.geteuid() == 0}


def versions(orthanc_url: str | None) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    git = ["git", "-C", str(Path(__file__).resolve().parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    out["s4s-jupyter git"] = head + (" with uncommitted changes" if dirty else "")
    out["curl"] = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()[1]
    if orthanc_url:
        out["orthanc"] = str(httpx.get(f"{orthanc_url}/system").json()["Version"])
        out["orthanc-dicomweb"] = str(httpx.get(f"{orthanc_url}/plugins/dicom-web").json()["Version"])
    return out


def _num(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def markdown(figures: list[Figure], info: dict[str, Any]) -> str:
    ceiling = next((f.value(f.ours) for f in figures if f.name.startswith("loopback")), float("nan"))
    httpx_ceiling = next((f.value(f.ours) for f in figures if f.name.startswith("httpx client ceiling")),
                         float("nan"))
    m, v = info["machine"], info["versions"]
    lines = [
        f"Run of {info['finished']} UTC; data set {info['data_set']}.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}. "
        f"Orthanc {v.get('orthanc', '?')} with DICOMweb {v.get('orthanc-dicomweb', '?')}; "
        f"dicomweb-client {v['dicomweb-client']}; curl {v['curl']}; Python {v['python']}.",
        f"Each value is the {info['rounds']}-repeat statistic named in the figure ({info['broker_rounds']} "
        f"for the rows through the broker, {info['few_rounds']} for the disk, server memory, FHIR and "
        "STOW-RS rows; median unless p50/p95; peak memory: max); systems interleaved ABBA. "
        "Ratio = ours / baseline. "
        "\"of limit\" = ours / the loopback ceiling of the same client (curl's; httpx's for httpx rows).",
        "",
        "| group | figure | unit | ours | baseline | ratio | target | met? | of limit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        ours, base = f.value(f.ours), f.value(f.baseline)
        met = {True: "yes", False: "**NO**", None: ""}[f.met]
        limit = httpx_ceiling if "httpx" in f.name else ceiling
        shown = f.unit == "MB/s" and f.group != "ceilings" and not math.isnan(limit)
        share = f"{ours / limit:.0%}" if shown else ""
        name = f.name + (f" ({f.note})" if f.note else "")
        lines.append(f"| {f.group} | {name} | {f.unit} | {_num(ours)} {f.ours_label} | "
                     f"{_num(base) + ' ' + f.baseline_label if f.baseline else ''} | "
                     f"{_num(f.ratio) if f.baseline else ''} | {f.target.text if f.target else ''} | {met} | "
                     f"{share} |")
    return "\n".join(lines) + "\n"


def write(results: Path, figures: list[Figure], info: dict[str, Any]) -> tuple[Path, Path]:
    results.mkdir(parents=True, exist_ok=True)
    stamp = info["finished"].replace(":", "").replace("-", "").replace(" ", "T")
    md, js = results / f"bench-{stamp}.md", results / f"bench-{stamp}.json"
    md.write_text(markdown(figures, info))
    js.write_text(json.dumps({**info, "figures": [f.to_json() for f in figures]}, indent=1))
    for link, target in ((results / "latest.md", md), (results / "latest.json", js)):
        link.unlink(missing_ok=True)
        link.symlink_to(target.name)
    return md, js
