"""Clients we did not write as judges: dicomweb-client against the PACS, and the demo command as users
run it (a subprocess, its URLs file, Ctrl-C)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
from dicomweb_client import DICOMwebClient

from servers.demo_data.dicom import iter_study
from servers.demo_data.plan import DemoOptions, DemoPlan, make_plan
from tests.pacs.conftest import PACS

ROOT = Path(__file__).resolve().parents[2]


def test_dicomweb_client_stores_searches_and_retrieves(pacs: PACS, small_plan: DemoPlan) -> None:
    client = DICOMwebClient(pacs.url)
    patient, study = small_plan.studies()[0]
    datasets = [pydicom.dcmread(io.BytesIO(b)) for _, b in iter_study(patient, study)]
    client.store_instances(datasets)

    studies = client.search_for_studies(search_filters={"PatientID": patient.mrn})
    assert [s["0020000D"]["Value"][0] for s in studies] == [study.study_uid]
    series = client.search_for_series(study.study_uid)
    assert len(series) == len(study.series)
    se = study.series[0]
    instances = client.search_for_instances(study.study_uid, se.series_uid)
    assert [i["00080018"]["Value"][0] for i in instances] == list(se.instance_uids)
    fuzzy = client.search_for_studies(search_filters={"PatientName": patient.given[:3].lower()},
                                      fuzzymatching=True, fields=["StudyDescription"])
    assert study.study_uid in [s["0020000D"]["Value"][0] for s in fuzzy]

    retrieved = client.retrieve_study(study.study_uid)
    assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(ds.SOPInstanceUID for ds in datasets)
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    for ds in retrieved:
        assert np.array_equal(ds.pixel_array, by_uid[ds.SOPInstanceUID].pixel_array)
    one = client.retrieve_instance(study.study_uid, se.series_uid, se.instance_uids[0])
    assert one.PatientID == patient.mrn

    metadata = client.retrieve_series_metadata(study.study_uid, se.series_uid)
    assert len(metadata) == len(se.instance_uids)
    bulk = client.retrieve_bulkdata(metadata[0]["7FE00010"]["BulkDataURI"])
    assert bulk[0] == by_uid[metadata[0]["00080018"]["Value"][0]].PixelData
    frames = client.retrieve_instance_frames(study.study_uid, se.series_uid, se.instance_uids[0], [1])
    assert frames[0] == by_uid[se.instance_uids[0]].PixelData
    rendered = client.retrieve_instance_rendered(study.study_uid, se.series_uid, se.instance_uids[0],
                                                 media_types=("image/png",))
    assert rendered.startswith(b"\x89PNG")


def test_demo_command_serves_the_demo_patients_and_stops_on_sigint(tmp_path: Path) -> None:
    urls_file = tmp_path / "urls.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "demo.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "servers.cli", "--log-level", "WARNING", "demo", "--data-dir",
             str(tmp_path / "data"), "--urls-file", str(urls_file)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        deadline = time.monotonic() + 60
        while not urls_file.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the demo did not write its URLs file"
            time.sleep(0.1)
        urls = json.loads(urls_file.read_text())
        assert urls["pacs_dicomweb"].startswith("http://127.0.0.1:")
        assert urls["pacs_dicomweb"].endswith("/dicom-web")
        client = DICOMwebClient(urls["pacs_dicomweb"])
        plan = make_plan(DemoOptions())
        for patient in plan.patients:
            found = client.search_for_studies(search_filters={"PatientID": patient.mrn})
            expected = sorted(s.study_uid for s in patient.studies)
            assert sorted(s["0020000D"]["Value"][0] for s in found) == expected
        patient = next(p for p in plan.patients if p.studies)
        study = patient.studies[0]
        retrieved = client.retrieve_study(study.study_uid)
        assert len(retrieved) == study.number_of_instances
        assert {ds.PatientID for ds in retrieved} == {patient.mrn}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
