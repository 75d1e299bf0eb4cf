"""The files both PACS are loaded with, and the malformed variants the suite uploads.

The valid set is made by the project's own generator (:mod:`servers.demo_data.dicom`) from a small demo
plan: six patients whose names share given and family names (for wildcard matching), studies on
different dates, CT, MR and CR, one or two series of one to three small images. Every file is DICOM
Part 10, Explicit VR Little Endian, with real pixel content, so WADO-RS pixel data and frames can be
compared byte for byte with the file that was stored.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from servers.demo_data.dicom import dataset_bytes, instance_bytes, make_dataset
from servers.demo_data.plan import (
    UID_ROOT,
    DemoOptions,
    DemoPatient,
    DemoPlan,
    SeriesPlan,
    StudyPlan,
    make_plan,
)

#: the plan of the conformance data set (about 20 instances of 16x16 or 32x32 pixels)
CONFORMANCE_OPTIONS = DemoOptions(patients=6, studies_per_patient=(1, 2), series_per_study=(1, 2),
                                  instances_per_series=(1, 3), rows=16, columns=16)


@dataclass(frozen=True)
class Instance:
    """One Part 10 file of the set, with the plan entries it came from (``index`` counts from 0)."""

    patient: DemoPatient
    study: StudyPlan
    series: SeriesPlan
    index: int
    data: bytes

    @property
    def sop_instance_uid(self) -> str:
        return self.series.instance_uids[self.index]

    def dataset(self) -> Dataset:
        return pydicom.dcmread(io.BytesIO(self.data))


def conformance_plan() -> DemoPlan:
    return make_plan(CONFORMANCE_OPTIONS)


def build_instances(plan: DemoPlan | None = None) -> list[Instance]:
    """Every instance of ``plan`` (the conformance plan by default) as Part 10 bytes."""
    plan = plan or conformance_plan()
    return [Instance(patient, study, series, i, instance_bytes(patient, study, series, i))
            for patient, study in plan.studies()
            for series in study.series
            for i in range(len(series.instance_uids))]


def new_uid(*parts: object) -> str:
    """A deterministic UID for objects the suite makes up (never in the conformance plan)."""
    return generate_uid(UID_ROOT, entropy_srcs=["conformance", *map(str, parts)])


def variant(source: Instance, tag: str, **changes: object) -> Dataset:
    """A copy of ``source`` as a new instance (fresh SOP Instance UID from ``tag``) with ``changes`` set.

    A change to ``None`` deletes the attribute. The result is a dataset; :func:`part10` writes it.
    """
    ds = make_dataset(source.patient, source.study, source.series, source.index)
    uid = new_uid(tag, source.sop_instance_uid)
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    with warnings.catch_warnings():  # values may be invalid on purpose
        warnings.simplefilter("ignore", UserWarning)
        for keyword, value in changes.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
    return ds


def part10(ds: Dataset) -> bytes:
    """``ds`` as a DICOM Part 10 file (PS3.10 7.1), through the project's writer (quietly: the suite
    writes invalid values on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return dataset_bytes(ds)
