"""How retrieval requests become series targets, and what each target knows before asking the server:
the instance lists an ImagingStudy gives, and each series' count (a whole series whose count is known
is found complete without its instance list)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from s4s_jupyter.client.targets import DICOMwebEndpoint, series_targets

STUDY = "1.2.3.4"
ENDPOINT = DICOMwebEndpoint("http://127.0.0.1:9/dicom-web")


def series_answer(*series: tuple[str, int, Any]) -> list[dict[str, Any]]:
    """A QIDO-RS series answer: (uid, number, NumberOfSeriesRelatedInstances or None)."""
    out = []
    for uid, number, count in series:
        item = {"0020000E": {"vr": "UI", "Value": [uid]}, "00200011": {"vr": "IS", "Value": [number]}}
        if count is not None:
            item["00201209"] = {"vr": "IS", "Value": [count]}
        out.append(item)
    return out


def test_series_counts_come_from_the_series_query() -> None:
    asked: list[tuple[str, Mapping[str, str]]] = []

    def qido(endpoint: DICOMwebEndpoint, path: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        asked.append((path, params))
        return series_answer(("1.2.3.4.2", 2, "7"), ("1.2.3.4.1", 1, 3), ("1.2.3.4.3", 3, None),
                             ("1.2.3.4.4", 4, "many"))

    targets = series_targets(STUDY, endpoint=ENDPOINT, qido=qido)
    assert [(t.series_uid, t.count, t.instances) for t in targets] == [
        ("1.2.3.4.1", 3, None), ("1.2.3.4.2", 7, None), ("1.2.3.4.3", None, None), ("1.2.3.4.4", None, None)]
    assert asked == [(f"studies/{STUDY}/series",
                      {"includefield": "SeriesNumber,NumberOfSeriesRelatedInstances"})]


def test_counts_come_only_from_the_imaging_server() -> None:
    """An ImagingStudy's ``numberOfInstances`` and a DataFrame's ``number_of_instances`` may be stale (the
    EHR's, an earlier query's): a count too low would hide an instance the server left out, so neither
    becomes a target's count; the instance lists an ImagingStudy gives are taken."""
    def qido(*_: object) -> list[dict[str, Any]]:
        raise AssertionError("the series are named: no query")

    resource = {
        "resourceType": "ImagingStudy", "id": "img1", "subject": {"reference": "Patient/p1"},
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY}"}],
        "series": [
            {"uid": "1.2.3.4.1", "numberOfInstances": 2,
             "instance": [{"uid": "1.2.3.4.1.1", "number": 1}, {"uid": "1.2.3.4.1.2", "number": 2}]},
            {"uid": "1.2.3.4.2", "numberOfInstances": 5},
        ],
    }
    targets = series_targets(resource, endpoint=ENDPOINT, qido=qido)
    assert [(t.series_uid, t.count, len(t.instances or ())) for t in targets] == [
        ("1.2.3.4.1", None, 2), ("1.2.3.4.2", None, 0)]
    assert targets[1].instances is None and targets[0].fhir_study == "img1"

    rows = pd.DataFrame([{"study_uid": STUDY, "series_uid": "1.2.3.4.1", "number_of_instances": 4}])
    assert [t.count for t in series_targets(rows, endpoint=ENDPOINT, qido=qido)] == [None]
