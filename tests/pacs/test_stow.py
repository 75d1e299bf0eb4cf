"""STOW-RS against the running PACS (PS3.18 10.5): acceptance, idempotence, conflicts, refusals."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import pytest

from s4s_jupyter.core.multipart import encode_parts
from servers.demo_data.plan import DemoPlan
from servers.pacs.settings import PACSSettings
from servers.runtime import ServerLoop
from tests.pacs.conftest import PACS, STOW_TYPE, parse_multipart, start_pacs


@pytest.fixture(params=[True, False], ids=["fsync", "no-fsync"])
def pacs(server_loop: ServerLoop, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[PACS]:
    """An empty PACS of this test alone (upload limit 4 MiB), with and without fsync: parts are then
    stored in worker threads or on the event loop (servers/pacs/handlers.py), and both must answer the
    same."""
    p = start_pacs(server_loop, PACSSettings(data_dir=tmp_path / "pacs", max_upload_bytes=4 * 1024 * 1024,
                                             fsync=request.param))
    yield p
    p.http.close()

REFERENCED = "00081199"
FAILED = "00081198"
REASON = "00081197"
SOP_UID = "00081155"


def _uids(body: dict, seq: str) -> list[str]:  # type: ignore[type-arg]
    return [item[SOP_UID].get("Value", [""])[0] for item in body.get(seq, {}).get("Value", [])]


def _first(plan_files: dict[str, bytes]) -> tuple[str, bytes]:
    return next(iter(plan_files.items()))


def test_store_instances_then_retrieve_the_same_bytes(pacs: PACS, plan_files: dict[str, bytes]) -> None:
    items = list(plan_files.items())[:6]
    r = pacs.stow([b for _, b in items])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    body = r.json()
    assert sorted(_uids(body, REFERENCED)) == sorted(uid for uid, _ in items)
    assert FAILED not in body
    ds = pydicom.dcmread(io.BytesIO(items[0][1]))
    url = body[REFERENCED]["Value"][0]["00081190"]["Value"][0]
    assert url.startswith(pacs.url + "/studies/")
    got = pacs.http.get(f"{pacs.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                        f"/instances/{ds.SOPInstanceUID}", headers={"Accept": "multipart/related; "
                        'type="application/dicom"; transfer-syntax=*'})
    assert got.status_code == 200
    assert parse_multipart(got)[0][1] == items[0][1]


def test_the_same_instance_twice_is_idempotent(pacs: PACS, plan_files: dict[str, bytes]) -> None:
    uid, data = _first(plan_files)
    assert pacs.stow([data]).status_code == 200
    again = pacs.stow([data])
    assert again.status_code == 200
    assert _uids(again.json(), REFERENCED) == [uid]
    assert pacs.store.count_instances() == 1
    assert len([p for p in (pacs.settings.data_dir / "objects").rglob("*") if p.is_file()]) == 1


def test_a_different_object_under_a_stored_sop_instance_uid_is_a_conflict(
        pacs: PACS, plan_files: dict[str, bytes]) -> None:
    uid, data = _first(plan_files)
    assert pacs.stow([data]).status_code == 200
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.SeriesDescription = "changed"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    r = pacs.stow([buf.getvalue()])
    assert r.status_code == 409, r.text
    failed = r.json()[FAILED]["Value"][0]
    assert failed[SOP_UID]["Value"] == [uid]
    assert failed[REASON]["Value"] == [0x0111]
    assert "different object" in r.headers["warning"]
    stored = pacs.store.instance_files(ds.StudyInstanceUID, None, uid)[0]
    assert stored.path.read_bytes() == data  # the first object is untouched


def test_a_study_uid_mismatch_with_the_url_is_a_conflict(pacs: PACS, plan_files: dict[str, bytes]) -> None:
    _, data = _first(plan_files)
    r = pacs.stow([data], study="1.2.3.4.5")
    assert r.status_code == 409
    assert r.json()[FAILED]["Value"][0][REASON]["Value"] == [0xA900]
    assert pacs.store.count_instances() == 0


def test_store_into_the_study_of_the_url(pacs: PACS, plan_files: dict[str, bytes]) -> None:
    _, data = _first(plan_files)
    study = pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID
    r = pacs.stow([data], study=study)
    assert r.status_code == 200
    assert r.json()["00081190"]["Value"] == [f"{pacs.url}/studies/{study}"]


def test_truncated_files_are_refused(pacs: PACS, plan_files: dict[str, bytes]) -> None:
    _, data = _first(plan_files)
    for cut in (len(data) - 1, len(data) - 100, 700, 1000):
        r = pacs.stow([data[:cut]])
        assert r.status_code == 400, (cut, r.text)
        assert r.json()[FAILED]["Value"][0][REASON]["Value"][0] in (0xA900, 0xC000)
        assert "truncated" in r.headers["warning"] or "missing" in r.headers["warning"]
    assert pacs.store.count_instances() == 0


def test_pixel_data_shorter_than_rows_by_columns_is_refused(pacs: PACS, plan_files: dict[str, bytes]) -> None:
    _, data = _first(plan_files)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PixelData = ds.PixelData[:-64]  # a consistent file whose pixel data does not fill the image
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    r = pacs.stow([buf.getvalue()])
    assert r.status_code == 400
    assert "Pixel Data holds" in r.headers["warning"]


def test_a_meta_group_naming_two_transfer_syntaxes_cannot_hide_truncated_pixel_data(
        pacs: PACS, plan_files: dict[str, bytes]) -> None:
    """The check leaves native Pixel Data unread when the meta group names an explicit VR syntax. A
    crafted file names Explicit VR Little Endian first and Deflated second (pydicom keeps the last):
    its inflated dataset declares full Pixel Data but holds half, and zero padding makes the file long
    enough for the declared length. It must be refused as a truncated file, as without deferral."""
    import struct
    import zlib

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from servers.pacs.validation import DEFER_BYTES

    _, data = _first(plan_files)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows = ds.Columns = 256  # Pixel Data over the size the check leaves unread (DEFER_BYTES)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.SamplesPerPixel = 16, 16, 15, 1
    ds.PixelData = bytes(range(256)) * 512
    assert len(ds.PixelData) > DEFER_BYTES
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    inflated = body.getvalue()[:-len(ds.PixelData) // 2]  # the dataset stops halfway through its pixels
    packer = zlib.compressobj(wbits=-15)
    deflated = packer.compress(inflated) + packer.flush()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    group = meta.getvalue()
    uid = b"1.2.840.10008.1.2.1\0"
    first = struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(uid)) + uid
    at = group.index(struct.pack("<HH", 0x0002, 0x0010))
    length = struct.unpack_from("<I", group, 8)[0] + len(first)
    group = group[:8] + struct.pack("<I", length) + group[12:at] + first + group[at:]
    crafted = b"\0" * 128 + b"DICM" + group + deflated + b"\0" * len(ds.PixelData)
    r = pacs.stow([crafted])
    assert r.status_code == 400, r.text
    assert "truncated" in r.headers["warning"]
    assert pacs.store.count_instances() == 0


def test_invalid_uids_are_refused(pacs: PACS, plan_files: dict[str, bytes]) -> None:
    uid, data = _first(plan_files)
    bad = uid[:-3] + ".0" + uid[-1]  # a component with a leading zero (PS3.5 9.1), same length
    assert len(bad) == len(uid)
    r = pacs.stow([data.replace(uid.encode(), bad.encode())])
    assert r.status_code == 400, r.text
    assert "SOPInstanceUID" in r.headers["warning"]
    letters = uid[:-4] + "abcd"
    r = pacs.stow([data.replace(uid.encode(), letters.encode())])
    assert r.status_code == 400
    assert pacs.store.count_instances() == 0


def test_objects_that_are_not_dicom_are_refused(pacs: PACS) -> None:
    r = pacs.stow([b"%PDF-1.7 not a DICOM file" * 20])
    assert r.status_code == 400
    assert "Part 10" in r.headers["warning"]


def test_partial_success_is_202_with_both_sequences(pacs: PACS, plan_files: dict[str, bytes]) -> None:
    (uid1, good), (uid2, other) = list(plan_files.items())[:2]
    r = pacs.stow([good, other[:-10]])
    assert r.status_code == 202, r.text
    body = r.json()
    assert _uids(body, REFERENCED) == [uid1]
    assert _uids(body, FAILED) == [uid2]
    assert pacs.store.count_instances() == 1


def test_a_part_of_another_type_fails_alone(pacs: PACS, plan_files: dict[str, bytes]) -> None:
    _, good = _first(plan_files)
    r = pacs.stow([good, ("application/json", b"{}")])
    assert r.status_code == 202
    assert r.json()[FAILED]["Value"][0][REASON]["Value"] == [0x0122]


def test_unsupported_media_types_are_415(pacs: PACS, plan_files: dict[str, bytes]) -> None:
    _, data = _first(plan_files)
    r = pacs.http.post(pacs.url + "/studies", content=data, headers={"Content-Type": "application/dicom"})
    assert r.status_code == 415
    assert r.json()["status"] == 415 and "multipart/related" in r.json()["message"]
    body, boundary = encode_parts([("application/dicom+json", b"[]")])
    r = pacs.http.post(pacs.url + "/studies", content=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom+json"; boundary={boundary}'})
    assert r.status_code == 415
    r = pacs.stow([("application/octet-stream", b"x")])
    assert r.status_code == 415


def test_malformed_multipart_bodies_are_400(pacs: PACS, plan_files: dict[str, bytes]) -> None:
    _, data = _first(plan_files)
    body, boundary = encode_parts([("application/dicom", data)])
    cut = body[: -len(f"--{boundary}--\r\n") - 2]  # no close delimiter
    r = pacs.http.post(pacs.url + "/studies", content=cut,
                       headers={"Content-Type": STOW_TYPE.format(boundary)})
    assert r.status_code == 400
    r = pacs.http.post(pacs.url + "/studies", content=body,
                       headers={"Content-Type": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 400 and "boundary" in r.json()["message"]
    assert pacs.store.count_instances() == 0


def test_a_body_over_the_limit_is_413_before_it_is_read(pacs: PACS) -> None:
    """The answer comes while the client has sent the headers only."""
    u = urlsplit(pacs.url)
    limit = pacs.settings.max_upload_bytes
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall((f"POST {u.path}/studies HTTP/1.1\r\nHost: {u.netloc}\r\n"
                   'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
                   f"Content-Length: {limit + 1}\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_chunked_body_over_the_limit_is_413(pacs: PACS) -> None:
    limit = pacs.settings.max_upload_bytes
    boundary = "b0undary"

    def body():  # type: ignore[no-untyped-def]
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        sent = 0
        while sent <= limit:
            yield b"\0" * 65536
            sent += 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    r = pacs.http.post(pacs.url + "/studies", content=body(), headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 413
    assert pacs.store.count_instances() == 0


def test_concurrent_uploads_of_one_study(pacs: PACS, small_plan: DemoPlan,
                                         plan_files: dict[str, bytes]) -> None:
    _patient, study = small_plan.studies()[0]
    uids = [u for s in study.series for u in s.instance_uids]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda u: pacs.stow([plan_files[u]]).status_code, uids + uids))
    assert results == [200] * (2 * len(uids))
    assert pacs.store.count_instances() == len(uids)
    r = pacs.get("/studies", StudyInstanceUID=study.study_uid)
    study_json = r.json()[0]
    assert study_json["00201208"]["Value"] == [len(uids)]
    assert study_json["00201206"]["Value"] == [len(study.series)]


def test_stow_with_a_client_we_did_not_write(pacs: PACS, plan_files: dict[str, bytes]) -> None:
    """httpx with a hand-built body is ours; dicomweb-client's store_instances is not."""
    from dicomweb_client import DICOMwebClient

    datasets = [pydicom.dcmread(io.BytesIO(b)) for b in list(plan_files.values())[:4]]
    client = DICOMwebClient(pacs.url)
    result = client.store_instances(datasets)
    refs = [item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence]
    assert sorted(refs) == sorted(ds.SOPInstanceUID for ds in datasets)


def test_a_part_over_the_per_part_limit_fails_alone(server_loop: ServerLoop, tmp_path: Path,
                                                    plan_files: dict[str, bytes]) -> None:
    small, large = sorted(plan_files.values(), key=len)[0], sorted(plan_files.values(), key=len)[-1]
    p = start_pacs(server_loop, PACSSettings(data_dir=tmp_path / "pacs", max_part_bytes=len(small)))
    r = p.stow([small, large])
    assert r.status_code == 202
    assert r.json()[FAILED]["Value"][0][REASON]["Value"] == [0xA700]
    assert p.stow([large]).status_code == 413
    assert p.store.count_instances() == 1
    p.http.close()
