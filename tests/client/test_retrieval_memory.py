"""The kit's memory while it downloads stays bounded by its chunk and head sizes, whatever the study's
size: the Python allocations at their peak (tracemalloc) for a study four times larger than another of
the same shape are the same, and a fraction of what the study weighs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from servers.demo_data.plan import DemoOptions, DemoPlan, make_plan
from servers.runtime import ServerLoop


@pytest.fixture(scope="module")
def heavy(server_loop: ServerLoop,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[str, DemoPlan, DemoPlan]:
    """A PACS holding two studies of 4 series of CT instances of 256 x 256: 8 instances per series
    (about 4 MB) and 32 (about 17 MB)."""
    from servers.pacs.app import dicomweb_url, make_app
    from servers.pacs.seed import seed
    from servers.pacs.settings import PACSSettings

    def plan(seed_: int, instances: int) -> DemoPlan:
        return make_plan(DemoOptions(seed=seed_, patients=1, studies_per_patient=(1, 1),
                                     series_per_study=(4, 4), instances_per_series=(instances, instances),
                                     rows=256, columns=256, modalities=("CT",)))

    small, large = plan(11, 8), plan(12, 32)
    settings = PACSSettings(data_dir=tmp_path_factory.mktemp("heavy-pacs"), fsync=False)
    served = server_loop.serve(lambda url: make_app(settings, url))
    seed(served.app.settings["pacs"].store, small)
    seed(served.app.settings["pacs"].store, large)
    return dicomweb_url(served.url), small, large


#: the download in a process of its own: tracemalloc then sees the kit's allocations only, not those of
#: the in-process servers (a PACS's send buffers grow when the machine is busy and the client reads slower)
CHILD = """
import json, sys, tracemalloc
from s4s_jupyter import DICOMweb
url, study_uid, out = sys.argv[1:4]
with DICOMweb(url) as pacs:
    pacs.download(study_uid, out + "-warm", first_only=True, progress=False)  # imports, connections
    tracemalloc.start()
    manifest = pacs.download(study_uid, out, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
status = sorted(set(manifest["status"]))
print(json.dumps({"peak": peak, "size": int(manifest["size"].sum()), "status": status}))
"""


def peak_while(url: str, study_uid: str, out: Path) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", CHILD, url, study_uid, str(out)], capture_output=True,
                          text=True, timeout=100, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == ["downloaded"]
    return int(result["peak"]), int(result["size"])


def test_download_memory_does_not_grow_with_the_study(heavy: tuple[str, DemoPlan, DemoPlan],
                                                      tmp_path: Path) -> None:
    url, small, large = heavy
    # the lower of two runs each: on a busy machine one peak alone varies from 1.6 to 2.5 MB for either
    # study (measured with both cores loaded), which a 1 MB margin between single runs did not absorb
    runs_small = [peak_while(url, small.patients[0].studies[0].study_uid, tmp_path / f"s{i}") for i in (0, 1)]
    runs_large = [peak_while(url, large.patients[0].studies[0].study_uid, tmp_path / f"l{i}") for i in (0, 1)]
    peak_small, small_bytes = min(runs_small)
    peak_large, large_bytes = min(runs_large)
    assert large_bytes > 3.5 * small_bytes and large_bytes > 15_000_000
    # 4 connections x (256 KiB read + 64 KiB head), plus the manifest: not the study
    assert peak_large < 4_000_000 and peak_large < large_bytes / 4
    # holding the study would add 13 MB for the larger one; noise stays well under 1.5 MB
    assert peak_large < peak_small + 1_500_000, (runs_small, runs_large)
