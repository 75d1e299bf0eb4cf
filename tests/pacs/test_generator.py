"""The DICOM generator: real, deterministic Part 10 files that agree with the demo plan."""

from __future__ import annotations

import inspect
import io
import itertools

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from servers.demo_data.dicom import iter_plan, iter_study, plan_size
from servers.demo_data.plan import DemoOptions, DemoPlan, make_plan


def test_same_plan_gives_the_same_bytes(small_plan: DemoPlan) -> None:
    again = make_plan(small_plan.options)
    assert list(iter_plan(small_plan)) == list(iter_plan(again))


def test_iter_plan_streams_every_instance_once(small_plan: DemoPlan) -> None:
    gen = iter_plan(small_plan)
    assert inspect.isgenerator(gen)
    uids = [uid for uid, _ in gen]
    expected = [u for _, st in small_plan.studies() for se in st.series for u in se.instance_uids]
    assert uids == expected
    assert len(set(uids)) == plan_size(small_plan) == len(expected) > 12


def test_instances_carry_the_plan_patient_study_and_series(small_plan: DemoPlan) -> None:
    for patient, study in small_plan.studies():
        for n, (uid, data) in enumerate(iter_study(patient, study)):
            ds = pydicom.dcmread(io.BytesIO(data))
            assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert ds.SOPInstanceUID == uid == ds.file_meta.MediaStorageSOPInstanceUID
            assert ds.PatientID == patient.mrn
            assert str(ds.PatientName) == patient.dicom_name
            assert ds.PatientBirthDate == patient.birth_date.strftime("%Y%m%d")
            assert ds.PatientSex == ("F" if patient.sex == "female" else "M")
            assert ds.StudyInstanceUID == study.study_uid
            assert ds.AccessionNumber == study.accession_number
            assert ds.StudyDescription == study.description
            assert ds.StudyDate == study.started.strftime("%Y%m%d")
            assert ds.StudyTime == study.started.strftime("%H%M%S")
            assert ds.BodyPartExamined == study.body_part
            series = next(s for s in study.series if uid in s.instance_uids)
            assert ds.SeriesInstanceUID == series.series_uid
            assert ds.SeriesDescription == series.description
            assert ds.Modality == series.modality
            assert ds.SOPClassUID == series.sop_class_uid
            assert ds.InstanceNumber == series.instance_uids.index(uid) + 1
            assert (ds.Rows, ds.Columns) == (series.rows, series.columns)
            assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsAllocated == 16
            assert n < study.number_of_instances


def test_ct_slices_have_geometry_technique_and_phantom_pixels() -> None:
    plan = make_plan(DemoOptions(patients=1, studies_per_patient=(1, 1), series_per_study=(1, 1),
                                 instances_per_series=(5, 5), rows=48, columns=48, modalities=("CT",)))
    patient, study = plan.studies()[0]
    slices = [pydicom.dcmread(io.BytesIO(b)) for _, b in iter_study(patient, study)]
    normal = np.cross(np.array(slices[0].ImageOrientationPatient[:3], dtype=float),
                      np.array(slices[0].ImageOrientationPatient[3:], dtype=float))
    positions = [np.array(ds.ImagePositionPatient, dtype=float) for ds in slices]
    steps = [float(np.dot(b - a, normal)) for a, b in itertools.pairwise(positions)]
    assert all(abs(s - float(slices[0].SliceThickness)) < 1e-6 for s in steps)
    assert [float(ds.SliceLocation) for ds in slices] == sorted(float(ds.SliceLocation) for ds in slices)
    images = []
    for ds in slices:
        assert float(ds.KVP) in (80.0, 100.0, 120.0, 140.0) and float(ds.CTDIvol) > 0
        assert ds.RescaleType == "HU"
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert hu.min() >= -1000 and hu.max() <= 1000 and hu.std() > 50  # air, tissue, bone: a real image
        assert len(ds.PixelSpacing) == 2 and float(ds.PixelSpacing[0]) > 0
        images.append(ds.pixel_array)
    assert not np.array_equal(images[0], images[2])  # the phantom changes along the volume
