"""The store under process kills and concurrent writers: no row without its complete file, no orphans."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest

from servers.pacs.store import Conflict, Store, StoreInUse

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
from pathlib import Path
from servers.demo_data.dicom import iter_plan
from servers.demo_data.plan import DemoOptions, make_plan
from servers.pacs.store import Store

store = Store(Path(sys.argv[1]))
plan = make_plan(DemoOptions(seed=int(sys.argv[2]), patients=2, studies_per_patient=(2, 2),
                             series_per_study=(2, 2), instances_per_series=(40, 40), rows=256, columns=256,
                             modalities=("CT",)))
print("ready", flush=True)
for uid, data in iter_plan(plan):
    store.put(data)
print("done", flush=True)
"""


def check_consistent(data_dir: Path) -> int:
    """Every index row has its complete file; no temporary or unreferenced files remain."""
    store = Store(data_dir)  # opening tidies up after a crash
    try:
        rows = store.db.execute("SELECT sop_uid, sha256, size FROM instances").fetchall()
        for sop_uid, sha, size in rows:
            path = store.object_path(sha)
            data = path.read_bytes()
            assert len(data) == size, sop_uid
            assert hashlib.sha256(data).hexdigest() == sha, sop_uid
        assert list((data_dir / "tmp").iterdir()) == []
        on_disk = {p.parent.name + p.name for p in (data_dir / "objects").rglob("*") if p.is_file()}
        assert on_disk == {sha for _, sha, _ in rows}
        counts = store.db.execute("SELECT SUM(n_instances) FROM studies").fetchone()[0] or 0
        assert counts == len(rows)
        return len(rows)
    finally:
        store.close()


@pytest.mark.parametrize("delay", [0.3, 0.7])
def test_a_killed_writer_leaves_a_consistent_store(tmp_path: Path, delay: float) -> None:
    data_dir = tmp_path / "pacs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(data_dir), str(int(delay * 10))],
                             stdout=subprocess.PIPE, env=env, cwd=ROOT)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.stdout.read().strip() == b"", "the writer finished before it was killed"
    child.stdout.close()
    stored = check_consistent(data_dir)
    assert 0 < stored < 2 * 2 * 2 * 40


def test_open_removes_temporary_and_unreferenced_files(tmp_path: Path, plan_files: dict[str, bytes]) -> None:
    data_dir = tmp_path / "pacs"
    store = Store(data_dir)
    _uid, data = next(iter(plan_files.items()))
    store.put(data)
    store.close()
    (data_dir / "tmp" / "half-written.part").write_bytes(data[:100])
    orphan = data_dir / "objects" / "ab" / ("c" * 62)  # renamed into place, killed before its row
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"x")
    assert check_consistent(data_dir) == 1
    assert not orphan.exists()


def test_concurrent_writers_of_the_same_and_of_conflicting_objects(tmp_path: Path,
                                                                  plan_files: dict[str, bytes]) -> None:
    store = Store(tmp_path / "pacs")
    uid, data = next(iter(plan_files.items()))
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.SeriesDescription = "a different object, same SOP Instance UID"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    other = buf.getvalue()

    def put(blob: bytes) -> str:
        try:
            return "new" if not store.put(blob).already_present else "same"
        except Conflict:
            return "conflict"

    blobs = [data, other] * 8
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(put, blobs))
    assert outcomes.count("new") == 1
    winner = blobs[outcomes.index("new")]
    for blob, outcome in zip(blobs, outcomes, strict=True):
        assert outcome in (("new", "same") if blob == winner else ("conflict",))
    kept = store.instance_files(ds.StudyInstanceUID, None, uid)[0].path.read_bytes()
    assert kept == winner
    store.close()
    assert check_consistent(tmp_path / "pacs") == 1


def test_stores_sharing_a_folder_serialise_conflicting_writers(tmp_path: Path,
                                                              plan_files: dict[str, bytes]) -> None:
    """Worker processes of one PACS (``--processes``) each open the folder with ``shared=True``: their
    write locks are separate, so only SQLite's write transaction orders them. Four such stores race on
    the same and on conflicting objects, trial after trial; no writer may fail other than by Conflict."""
    owner = Store(tmp_path / "pacs", fsync=False)
    folder = owner.hand_over()
    with pytest.raises(StoreInUse):
        Store(tmp_path / "pacs")  # the supervisor keeps the folder
    stores = [Store(tmp_path / "pacs", fsync=False, shared=True) for _ in range(4)]
    base = pydicom.dcmread(io.BytesIO(next(iter(plan_files.values()))))
    for trial in range(12):
        versions = []
        for text in ("one", "two"):
            base.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{trial}"
            base.SeriesDescription = f"version {text}"
            buf = io.BytesIO()
            base.save_as(buf, enforce_file_format=True)
            versions.append(buf.getvalue())

        def put(job: tuple[Store, bytes]) -> str:
            try:
                return "new" if not job[0].put(job[1]).already_present else "same"
            except Conflict:
                return "conflict"

        jobs = [(stores[i % 4], versions[i % 2]) for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(put, jobs))
        assert outcomes.count("new") == 1, outcomes
        winner = jobs[outcomes.index("new")][1]
        for (_, blob), outcome in zip(jobs, outcomes, strict=True):
            assert outcome in (("new", "same") if blob == winner else ("conflict",))
    for store in stores:
        store.close()
    folder.close()
    assert check_consistent(tmp_path / "pacs") == 12


def test_the_index_is_sqlite_in_wal_mode(tmp_path: Path) -> None:
    Store(tmp_path / "pacs").close()
    with sqlite3.connect(tmp_path / "pacs" / "index.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_one_store_per_data_folder(tmp_path: Path) -> None:
    first = Store(tmp_path / "pacs")
    with pytest.raises(StoreInUse, match="in use"):
        Store(tmp_path / "pacs")
    first.close()
    Store(tmp_path / "pacs").close()  # free again once closed
