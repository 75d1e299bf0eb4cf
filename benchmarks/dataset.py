"""The benchmark's synthetic data set: the project's own DICOM generator, written once to a cache folder.

The main set is a demo plan of ``patients x studies x series x instances`` CT images of ``rows x rows``
16-bit pixels (default 10 x 2 x 2 x 100 of 512x512: about 2 GB). A separate *large study* (one patient,
4 series) of about ``large_mb`` megabytes serves the memory figures, which compare a server's and a
client's peak memory while moving it with the same while moving an ordinary study.

Files are Part 10, Explicit VR Little Endian, at ``{cache}/{key}/{study}/{series}/{sop}.dcm``; a
``complete`` marker says the folder holds the whole set, so a later run with the same shape reuses it.
"""

from __future__ import annotations

import multiprocessing
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from servers.demo_data.dicom import iter_study
from servers.demo_data.plan import DemoOptions, DemoPatient, DemoPlan, StudyPlan, make_plan

INSTANCE_HEADER_BYTES = 2_000  # roughly what the generator writes besides the pixels


@dataclass(frozen=True)
class Shape:
    """The size and shape of the data set (see the module docstring)."""

    patients: int = 10
    studies: int = 2
    series: int = 2
    instances: int = 100
    rows: int = 512
    large_mb: int = 2048  # issue 8: memory "while moving a 2 GB study"
    seed: int = 8

    @property
    def key(self) -> str:
        return (f"p{self.patients}-st{self.studies}-se{self.series}-i{self.instances}-r{self.rows}"
                f"-L{self.large_mb}-s{self.seed}")

    @property
    def instance_bytes(self) -> int:
        return self.rows * self.rows * 2 + INSTANCE_HEADER_BYTES

    def main_plan(self) -> DemoPlan:
        return make_plan(DemoOptions(seed=self.seed, patients=self.patients,
                                     studies_per_patient=(self.studies, self.studies),
                                     series_per_study=(self.series, self.series),
                                     instances_per_series=(self.instances, self.instances),
                                     rows=self.rows, columns=self.rows, modalities=("CT",)))

    def large_plan(self) -> DemoPlan:
        per_series = max(1, round(self.large_mb * 1e6 / self.instance_bytes / 4))
        return make_plan(DemoOptions(seed=self.seed + 1, patients=1, studies_per_patient=(1, 1),
                                     series_per_study=(4, 4),
                                     instances_per_series=(per_series, per_series),
                                     rows=self.rows, columns=self.rows, modalities=("CT",)))


SIZES = {
    "default": Shape(),
    "small": Shape(patients=4, studies=2, series=2, instances=100, rows=256, large_mb=256),
}


@dataclass(frozen=True)
class DataSet:
    """The generated files of a :class:`Shape` and the plans they come from."""

    shape: Shape
    folder: Path
    plan: DemoPlan
    large: DemoPlan

    def study_folder(self, study: StudyPlan) -> Path:
        return self.folder / study.study_uid

    def files(self, study: StudyPlan | None = None) -> Iterator[Path]:
        """Every file of one study, or of the whole set (the large study included), in plan order."""
        studies = [study] if study else [s for _, s in self.plan.studies() + self.large.studies()]
        for st in studies:
            for series in st.series:
                for uid in series.instance_uids:
                    yield self.folder / st.study_uid / series.series_uid / f"{uid}.dcm"

    @property
    def studies(self) -> list[tuple[DemoPatient, StudyPlan]]:
        return self.plan.studies()

    @property
    def large_study(self) -> StudyPlan:
        return self.large.patients[0].studies[0]

    def size_bytes(self, study: StudyPlan | None = None) -> int:
        return sum(p.stat().st_size for p in self.files(study))


def _write_study(job: tuple[Path, DemoPatient, StudyPlan]) -> int:
    folder, patient, study = job
    by_uid = {uid: s.series_uid for s in study.series for uid in s.instance_uids}
    done = 0
    for uid, data in iter_study(patient, study):
        path = folder / study.study_uid / by_uid[uid] / f"{uid}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        done += 1
    return done


def build(shape: Shape, cache: Path, log: bool = True) -> DataSet:
    """The data set of ``shape`` under ``cache`` (generated in parallel, one process per core, if absent)."""
    folder = cache / shape.key
    ds = DataSet(shape, folder, shape.main_plan(), shape.large_plan())
    if (folder / "complete").exists():
        return ds
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    jobs = [(folder, p, s) for p, s in ds.plan.studies() + ds.large.studies()]
    # the large study split by series would not parallelise; it is one job among many in the default set
    with multiprocessing.get_context("spawn").Pool() as pool:
        for n, _ in enumerate(pool.imap_unordered(_write_study, jobs), 1):
            if log:
                print(f"\r  generated {n}/{len(jobs)} studies", end="", flush=True)
    if log:
        print()
    (folder / "complete").write_text(shape.key + "\n")
    return ds
