"""After a crash, hidden ``.{SOPInstanceUID}.{pid}-{n}.part`` files stay in series folders; the next
download into the same folder removes the ones that are the kit's own and stale (older than the run, of
a process that is gone), and nothing else: another live process's part, a newer file and files of other
names stay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from s4s_jupyter.client.dicomweb import DICOMweb
from s4s_jupyter.client.retrieve import MANIFEST_FILE, remove_stale_parts
from servers.demo_data.plan import DemoPlan

#: a kernel killed while writing a part: the kit's own naming (``_Run.temporary``), half a file, SIGKILL
CRASH = """
import os, signal, sys
from pathlib import Path
from s4s_jupyter.client.retrieve import _Progress, _Run
run = _Run(Path(sys.argv[1]), _Progress(False, None, "x"))
for folder, sop in zip(sys.argv[2::2], sys.argv[3::2]):
    fd, name = run.temporary(folder, sop)
    os.write(fd, b"\\0" * 128 + b"DICM")
print(os.getpid(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def crash_leaving_parts(root: Path, parts: list[tuple[Path, str]]) -> int:
    args = [str(x) for folder, sop in parts for x in (folder, sop)]
    done = subprocess.run([sys.executable, "-c", CRASH, str(root), *args], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == -signal.SIGKILL, done.stderr
    return int(done.stdout.strip())


def test_a_later_download_removes_the_stale_parts_it_owns(pacs: str, kit_plan: DemoPlan,
                                                          tmp_path: Path) -> None:
    study = kit_plan.patients[0].studies[0]
    with DICOMweb(pacs) as client:
        first = client.download(study.study_uid, tmp_path, progress=False)
        folders = sorted({Path(p).parent for p in first["path"]})
        complete, refetched = folders[0], folders[1]  # one stays whole, one loses a file
        lost = next(Path(p) for p in first["path"] if Path(p).parent == refetched)
        lost.unlink()
        sop_a = first.loc[first["path"].map(lambda p: Path(p).parent == complete), "sop_uid"].iloc[0]
        sop_b = lost.stem

        dead = crash_leaving_parts(tmp_path, [(complete, sop_a), (refetched, sop_b)])
        stale = {complete / f".{sop_a}.{dead}-0.part", refetched / f".{sop_b}.{dead}-1.part"}
        assert all(p.exists() for p in stale)
        mkstemp_style = refetched / f".{sop_b}.k3x_9q0z.part"  # the fallback name of _Run.temporary
        tmp_part = tmp_path / ".s4s-tmp" / "tmpab12cd34.part"  # a header-less part of the crashed run
        tmp_part.parent.mkdir(exist_ok=True)
        for p in (mkstemp_style, tmp_part):
            p.write_bytes(b"partial")
        stale |= {mkstemp_style, tmp_part}

        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            live = refetched / f".{sop_b}.{sleeper.pid}-0.part"  # another process still downloading
            kept = {live, complete / ".notes.part", complete / "mine.part", refetched / f"{sop_b}.dcm.bak"}
            for p in kept:
                p.write_bytes(b"not the kit's stale part")
            past = time.time() - 3600
            for p in stale | kept:
                os.utime(p, (past, past))
            newer = complete / f".{sop_a}.{dead}-7.part"  # written after the run started: not touched
            newer.write_bytes(b"x")
            future = time.time() + 3600
            os.utime(newer, (future, future))
            kept.add(newer)

            second = client.download(study.study_uid, tmp_path, progress=False)
        finally:
            sleeper.kill()
            sleeper.wait()
    assert not any(p.exists() for p in stale), [p.name for p in stale if p.exists()]
    assert all(p.exists() for p in kept)
    assert set(second["status"]) == {"verified", "downloaded"}
    assert second.loc[second["status"] == "downloaded", "path"].tolist() == [str(lost)]
    assert (tmp_path / MANIFEST_FILE).exists() and not (tmp_path / ".s4s-tmp").exists()


def test_remove_stale_parts_only_matches_the_kits_names(tmp_path: Path) -> None:
    names = [".1.2.3.999999999-0.part", ".1.2.3.abcdefgh.part", ".1.2.3.part", "..part", ".a.b.1-0.part",
             ".1.2.3.1-0.part.dcm", "1.2.3.dcm"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (1, 1))
    (tmp_path / ".1.2.4.1-0.part").mkdir()  # a folder of that name is no file of ours
    os.utime(tmp_path / ".1.2.4.1-0.part", (1, 1))
    removed = remove_stale_parts(tmp_path, time.time())
    assert sorted(removed) == [".1.2.3.999999999-0.part", ".1.2.3.abcdefgh.part"]
    assert remove_stale_parts(tmp_path / "missing", time.time()) == []
