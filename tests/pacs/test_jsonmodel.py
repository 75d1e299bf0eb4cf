"""The direct DICOM JSON conversion gives exactly what pydicom's ``Dataset.to_json_dict`` gives."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pytest

from servers.pacs.jsonmodel import to_json

#: the test files shipped inside the pydicom wheel (never downloaded)
TEST_FILES = sorted(str(p) for p in (Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))


def _pydicom_paths(ds: pydicom.Dataset, prefix: str = "") -> dict[int, str]:
    paths: dict[int, str] = {}
    for elem in ds:
        path = f"{prefix}{elem.tag:08X}"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                paths.update(_pydicom_paths(item, f"{path}/{i}/"))
        else:
            paths[id(elem)] = path
    return paths


def _compare(data: bytes, threshold: int = 1024) -> None:
    fast = to_json(pydicom.dcmread(io.BytesIO(data), force=True), lambda p: "bulk:" + p, threshold)
    reference_ds = pydicom.dcmread(io.BytesIO(data), force=True)
    paths = _pydicom_paths(reference_ds)
    reference = reference_ds.to_json_dict(threshold, lambda e: "bulk:" + paths[id(e)])
    assert fast == reference


def test_the_generators_files(plan_files: dict[str, bytes]) -> None:
    for data in plan_files.values():
        _compare(data)
        _compare(data, threshold=0)


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: Path(p).name)
def test_pydicoms_own_test_files(path: str) -> None:
    data = Path(path).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some of these files are deliberately invalid
        try:
            pydicom.dcmread(io.BytesIO(data), force=True).to_json_dict()
        except Exception as exc:  # then ours fails the same way (it hands such elements to pydicom)
            with pytest.raises(type(exc)):
                to_json(pydicom.dcmread(io.BytesIO(data), force=True), lambda p: p, 1024)
            return
        _compare(data)
        _compare(data, threshold=64)
