"""The kit against DICOMweb servers used directly, without authorization: our PACS and Orthanc.

Retrieval to disk (layout, manifest, checksums), resumption after damage, in-memory retrieval, the lighter
options (first instance per series, metadata only, thumbnails), QIDO-RS into pandas.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import pandas as pd
import pytest
from pydicom import dcmread

from s4s_jupyter import DICOMweb
from s4s_jupyter.client.retrieve import MANIFEST_COLUMNS, MANIFEST_FILE
from servers.demo_data.plan import DemoPlan
from tests.support.orthanc import OrthancServer


@pytest.fixture(params=["pacs", "orthanc"])
def server(request: pytest.FixtureRequest) -> str:
    if request.param == "pacs":
        return str(request.getfixturevalue("pacs"))
    orthanc: OrthancServer = request.getfixturevalue("orthanc_pacs")
    return orthanc.dicomweb_url


def test_studies_search_into_dataframe(server: str, kit_plan: DemoPlan) -> None:
    patient = kit_plan.patients[0]
    with DICOMweb(server) as pacs:
        studies = pacs.studies(PatientID=patient.mrn)
        assert sorted(studies["study_uid"]) == sorted(s.study_uid for s in patient.studies)
        assert set(studies["patient_id"]) == {patient.mrn}
        assert str(studies["started"].dtype).startswith("datetime64")
        first = next(s for s in patient.studies if s.study_uid == studies["study_uid"].iloc[0])
        assert studies["number_of_instances"].iloc[0] == first.number_of_instances
        series = pacs.series(first.study_uid)
        assert list(series["series_uid"]) == [s.series_uid for s in first.series]
        assert list(series["number"]) == [s.number for s in first.series]


def test_download_study_layout_manifest_and_resume(server: str, kit_plan: DemoPlan, tmp_path: Path) -> None:
    patient = kit_plan.patients[0]
    study = patient.studies[0]
    with DICOMweb(server) as pacs:
        manifest = pacs.download(study.study_uid, tmp_path, progress=False)
        assert list(manifest.columns) == MANIFEST_COLUMNS
        assert len(manifest) == study.number_of_instances
        assert set(manifest["status"]) == {"downloaded"}
        for row in manifest.itertuples():
            path = Path(row.path)
            assert path == tmp_path / patient.mrn / study.study_uid / row.series_uid / f"{row.sop_uid}.dcm"
            data = path.read_bytes()
            assert len(data) == row.size
            assert row.checksum == f"crc32:{zlib.crc32(data):08x}"
            ds = dcmread(path)
            assert ds.SOPInstanceUID == row.sop_uid and ds.SeriesInstanceUID == row.series_uid
            assert ds.pixel_array.shape == (32, 32) or ds.Modality == "CR"
        assert not list(tmp_path.rglob("*.part"))  # no temporary file left
        sidecar = [json.loads(line) for line in (tmp_path / MANIFEST_FILE).read_text().splitlines()]
        assert {r["sop_uid"] for r in sidecar} == set(manifest["sop_uid"])

        # a second call verifies and skips everything
        again = pacs.download(study.study_uid, tmp_path, progress=False)
        assert set(again["status"]) == {"verified"}

        # damage one file, delete another: only those two are fetched again
        damaged, deleted = Path(manifest["path"].iloc[0]), Path(manifest["path"].iloc[-1])
        damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")
        deleted.unlink()
        third = pacs.download(study.study_uid, tmp_path, progress=False)
        fetched = third[third["status"] == "downloaded"]
        assert set(fetched["path"]) == {str(damaged), str(deleted)}
        assert (third["status"] != "downloaded").sum() == len(third) - 2
        assert dcmread(damaged).SOPInstanceUID == manifest["sop_uid"].iloc[0]
        assert f"crc32:{zlib.crc32(damaged.read_bytes()):08x}" == manifest["checksum"].iloc[0]


def test_sha256_on_request_and_sidecars_of_earlier_versions(server: str, kit_plan: DemoPlan,
                                                           tmp_path: Path) -> None:
    study = kit_plan.patients[0].studies[0]
    with DICOMweb(server) as pacs:
        manifest = pacs.download(study.study_uid, tmp_path, progress=False, checksum="sha256")
        for row in manifest.itertuples():
            assert row.checksum == f"sha256:{hashlib.sha256(Path(row.path).read_bytes()).hexdigest()}"
        # a sidecar as earlier versions wrote it (a bare "sha256") still verifies, and still finds damage
        sidecar = tmp_path / MANIFEST_FILE
        lines = [json.loads(line) for line in sidecar.read_text().splitlines()]
        sidecar.write_text("".join(json.dumps({**{k: v for k, v in rec.items() if k != "checksum"},
                                               "sha256": rec["checksum"].split(":")[1]}) + "\n"
                                   for rec in lines))
        damaged = Path(manifest["path"].iloc[1])
        damaged.write_bytes(damaged.read_bytes()[:-4] + b"\0\0\0\1")
        again = pacs.download(study.study_uid, tmp_path, progress=False)
        assert list(again["status"]).count("downloaded") == 1
        assert again.set_index("path").loc[str(damaged), "status"] == "downloaded"
        assert set(again["status"]) == {"verified", "downloaded"}
        with pytest.raises(ValueError, match="crc32"):
            pacs.download(study.study_uid, tmp_path, progress=False, checksum="md5")


def test_retrieve_into_pydicom_matches_the_files(server: str, kit_plan: DemoPlan, tmp_path: Path) -> None:
    patient = kit_plan.patients[1]
    with DICOMweb(server) as pacs:
        studies = pacs.studies(PatientID=patient.mrn)
        datasets = pacs.retrieve(studies.iloc[0], progress=False)
        plan = next(s for s in patient.studies if s.study_uid == studies["study_uid"].iloc[0])
        assert [d.SOPInstanceUID for d in datasets] == [u for s in plan.series for u in s.instance_uids]
        assert all(d.PatientID == patient.mrn for d in datasets)
        manifest = pacs.download(studies.iloc[0], tmp_path, progress=False)
        on_disk = {r.sop_uid: dcmread(r.path) for r in manifest.itertuples()}
        for ds in datasets:
            assert ds == on_disk[ds.SOPInstanceUID]  # every element, the pixels included
            assert ds.file_meta == on_disk[ds.SOPInstanceUID].file_meta
            # parsed from the part's bytes, which are not kept alive beside the Dataset
            assert ds.buffer is None or ds.buffer.closed


def test_first_instance_per_series_metadata_and_thumbnails(server: str, kit_plan: DemoPlan,
                                                           tmp_path: Path) -> None:
    study = kit_plan.patients[0].studies[1]
    with DICOMweb(server) as pacs:
        series = pacs.series(study.study_uid)
        firsts = pacs.retrieve(series, first_only=True, progress=False)
        assert [d.SOPInstanceUID for d in firsts] == [s.instance_uids[0] for s in study.series]
        manifest = pacs.download(series, tmp_path, first_only=True, progress=False)
        assert list(manifest["sop_uid"]) == [s.instance_uids[0] for s in study.series]

        meta = pacs.metadata(study.study_uid)
        assert [m.SOPInstanceUID for m in meta] == [u for s in study.series for u in s.instance_uids]
        assert all("PixelData" not in m and m.Rows for m in meta)

        thumbs = pacs.thumbnails(study.study_uid, size=64)
        assert list(thumbs["series_uid"]) == [s.series_uid for s in study.series]
        for image in thumbs["image"]:
            assert max(image.size) <= 64 and image.format == "PNG"


def test_series_and_single_instance_rows(server: str, kit_plan: DemoPlan, tmp_path: Path) -> None:
    study = kit_plan.patients[0].studies[0]
    one = study.series[1]
    rows = [{"study_uid": study.study_uid, "series_uid": one.series_uid, "sop_uid": one.instance_uids[2]}]
    with DICOMweb(server) as pacs:
        datasets = pacs.retrieve(rows, progress=False)
        assert [d.SOPInstanceUID for d in datasets] == [one.instance_uids[2]]
        manifest = pacs.download([{"study_uid": study.study_uid, "series_uid": one.series_uid}], tmp_path,
                                 progress=False)
        assert list(manifest["sop_uid"]) == list(one.instance_uids)
        # empty cells (None, NaN, pandas NA) mean "the whole series"
        frame = pd.DataFrame({"study_uid": [study.study_uid] * 2,
                              "series_uid": [s.series_uid for s in study.series],
                              "sop_uid": pd.array([pd.NA, pd.NA], dtype="string")})
        assert len(pacs.retrieve(frame, progress=False)) == study.number_of_instances


def test_unknown_study_fails_clearly(server: str, tmp_path: Path) -> None:
    from s4s_jupyter.core.errors import ClientError, InvalidUID

    with DICOMweb(server) as pacs:
        with pytest.raises(ClientError) as info:
            pacs.download("1.2.3.4.5.6.7.8.9", tmp_path, progress=False)
        assert info.value.status == 404 and "knows no series" in info.value.message
        with pytest.raises(InvalidUID):
            pacs.download("1.2.3/../../etc", tmp_path, progress=False)
        with pytest.raises(ClientError, match="404"):
            pacs.retrieve([{"study_uid": "1.2.3.4", "series_uid": "1.2.3.5", "sop_uid": "1.2.3.6"}],
                          progress=False)
