"""WADO-RS against the running PACS (PS3.18 10.4): instances, transfer syntaxes, metadata, frames,
bulk data, rendered images and thumbnails."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, generate_uid

from s4s_jupyter.core.dicomjson import first
from s4s_jupyter.core.multipart import iter_parts, parse_content_type
from servers.demo_data.plan import DemoPlan
from servers.pacs.settings import PACSSettings
from servers.runtime import ServerLoop
from tests.pacs.conftest import PACS, parse_multipart, read_dicom, start_pacs

DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
OCTETS = 'multipart/related; type="application/octet-stream"'


def _bytes(ds: pydicom.Dataset, implicit: bool = False) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def variants(plan_files: dict[str, bytes]) -> dict[str, bytes]:
    """The same image stored Implicit VR LE, RLE Lossless, and a 3-frame native instance."""
    base = read_dicom(next(iter(plan_files.values())))
    implicit = read_dicom(next(iter(plan_files.values())))
    implicit.SOPInstanceUID = implicit.file_meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=["implicit"])
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    rle = read_dicom(next(iter(plan_files.values())))
    rle.SOPInstanceUID = rle.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["rle"])
    rle.compress(RLELossless)
    multi = read_dicom(next(iter(plan_files.values())))
    multi.SOPInstanceUID = multi.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["multi"])
    frames = np.stack([base.pixel_array, base.pixel_array[::-1], base.pixel_array[:, ::-1]])
    multi.NumberOfFrames = 3
    multi.PixelData = frames.astype("<u2").tobytes()
    return {"implicit": _bytes(implicit, implicit=True), "rle": _bytes(rle), "multi": _bytes(multi)}


@pytest.fixture(scope="module", params=["blocks", "sendfile"])
def wado_pacs(request: pytest.FixtureRequest, server_loop: ServerLoop,
              tmp_path_factory: pytest.TempPathFactory, plan_files: dict[str, bytes],
              variants: dict[str, bytes]) -> Iterator[PACS]:
    """Stored files sent in small blocks read in the pool, or every one with sendfile(2)."""
    p = start_pacs(server_loop, PACSSettings(
        data_dir=tmp_path_factory.mktemp("wado") / "pacs", read_chunk_bytes=4096,
        sendfile_min_bytes=1 if request.param == "sendfile" else None))
    assert p.stow(list(plan_files.values())).status_code == 200
    assert p.stow(list(variants.values())).status_code == 200
    yield p
    p.http.close()


def _path(ds: pydicom.Dataset) -> str:
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def test_retrieve_study_as_stored_streams_every_instance(wado_pacs: PACS, small_plan: DemoPlan,
                                                          plan_files: dict[str, bytes]) -> None:
    _patient, study = small_plan.studies()[1]
    r = wado_pacs.get(f"/studies/{study.study_uid}", accept=DICOM_ANY)
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)  # sizes known: Content-Length sent
    parts = parse_multipart(r)
    expected = [u for s in study.series for u in s.instance_uids]
    assert [read_dicom(body).SOPInstanceUID for _, body in parts] == expected
    for headers, body in parts:
        assert headers["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
        assert body == plan_files[read_dicom(body).SOPInstanceUID]


def test_retrieve_series_and_instance_with_the_default_syntax(wado_pacs: PACS, small_plan: DemoPlan) -> None:
    _, study = small_plan.studies()[0]
    se = study.series[1]
    parts = parse_multipart(wado_pacs.get(f"/studies/{study.study_uid}/series/{se.series_uid}"))
    assert [read_dicom(b).SOPInstanceUID for _, b in parts] == list(se.instance_uids)
    one = parse_multipart(wado_pacs.get(
        f"/studies/{study.study_uid}/series/{se.series_uid}/instances/{se.instance_uids[0]}",
        accept='multipart/related; type="application/dicom"'))
    assert len(one) == 1 and read_dicom(one[0][1]).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_transfer_syntax_negotiation(wado_pacs: PACS, variants: dict[str, bytes]) -> None:
    implicit = read_dicom(variants["implicit"])
    path = _path(implicit)
    as_stored = parse_multipart(wado_pacs.get(path, accept=DICOM_ANY))[0][1]
    assert as_stored == variants["implicit"]
    default = parse_multipart(wado_pacs.get(path))[0]
    assert default[0]["content-type"].endswith(ExplicitVRLittleEndian)
    ds = read_dicom(default[1])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(ds.pixel_array, implicit.pixel_array)
    rle = read_dicom(variants["rle"])
    decoded = read_dicom(parse_multipart(wado_pacs.get(_path(rle)))[0][1])
    assert decoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(decoded.pixel_array, implicit.pixel_array)
    kept = parse_multipart(wado_pacs.get(_path(rle), accept=DICOM_ANY + ", application/dicom"))[0][1]
    assert kept == variants["rle"]
    asked = parse_multipart(wado_pacs.get(
        _path(rle), accept=f'multipart/related; type="application/dicom"; transfer-syntax={RLELossless}'))
    assert asked[0][1] == variants["rle"]


def test_what_cannot_be_served_is_406(wado_pacs: PACS, variants: dict[str, bytes],
                                      small_plan: DemoPlan) -> None:
    implicit = read_dicom(variants["implicit"])
    jpeg = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    r = wado_pacs.get(_path(implicit), accept=jpeg)
    assert r.status_code == 406 and "transfer syntax" in r.json()["message"]
    assert wado_pacs.get(_path(implicit), accept="application/json").status_code == 406
    assert wado_pacs.get(f"/studies/{small_plan.studies()[0][1].study_uid}",
                         accept='multipart/related; type="application/dicom+xml"').status_code == 406
    # the first acceptable alternative wins
    r = wado_pacs.get(_path(implicit), accept=f"{jpeg}, {DICOM_ANY};q=0.5")
    assert r.status_code == 200


def test_metadata_with_bulk_data_uris(wado_pacs: PACS, small_plan: DemoPlan,
                                      plan_files: dict[str, bytes]) -> None:
    patient, study = small_plan.studies()[2]  # study 0 also holds the variants
    r = wado_pacs.get(f"/studies/{study.study_uid}/metadata")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+json")
    md = r.json()
    assert len(md) == study.number_of_instances
    for obj in md:
        assert first(obj, "PatientID") == patient.mrn
        pixel = obj["7FE00010"]
        assert "Value" not in pixel and "InlineBinary" not in pixel
        uri = pixel["BulkDataURI"]
        assert uri.startswith(wado_pacs.url + "/studies/")
        bulk = wado_pacs.http.get(uri, headers={"Accept": OCTETS})
        assert bulk.status_code == 200
        original = read_dicom(plan_files[first(obj, "SOPInstanceUID")])
        assert parse_multipart(bulk)[0][1] == original.PixelData
    se = study.series[0]
    series_md = wado_pacs.get(f"/studies/{study.study_uid}/series/{se.series_uid}/metadata").json()
    assert [first(o, "SOPInstanceUID") for o in series_md] == list(se.instance_uids)
    one = wado_pacs.get(f"/studies/{study.study_uid}/series/{se.series_uid}/instances/"
                        f"{se.instance_uids[0]}/metadata").json()
    assert len(one) == 1 and first(one[0], "Rows") == se.rows
    r = wado_pacs.get(f"/studies/{study.study_uid}/metadata", accept="application/dicom")
    assert r.status_code == 406


def test_frames_native_and_encapsulated(wado_pacs: PACS, variants: dict[str, bytes]) -> None:
    multi = read_dicom(variants["multi"])
    frames = multi.pixel_array
    r = wado_pacs.get(_path(multi) + "/frames/3,1", accept=OCTETS)
    assert r.status_code == 200
    parts = parse_multipart(r)
    assert [h["content-type"] for h, _ in parts] == [
        f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"] * 2
    assert parts[0][1] == frames[2].astype("<u2").tobytes()
    assert parts[1][1] == frames[0].astype("<u2").tobytes()
    assert wado_pacs.get(_path(multi) + "/frames/4", accept=OCTETS).status_code == 404
    assert wado_pacs.get(_path(multi) + "/frames/0", accept=OCTETS).status_code == 400
    bad = wado_pacs.get(_path(multi) + "/frames/x", accept=OCTETS)
    assert bad.status_code == 400 and bad.json()["status"] == 400
    rle = read_dicom(variants["rle"])
    native = parse_multipart(wado_pacs.get(_path(rle) + "/frames/1", accept=OCTETS))[0][1]
    assert native == rle.pixel_array.astype("<u2").tobytes()
    stored = parse_multipart(wado_pacs.get(_path(rle) + "/frames/1", accept=OCTETS + "; transfer-syntax=*"))
    assert stored[0][0]["content-type"].endswith(RLELossless)
    assert stored[0][1].rstrip(b"\0") == next(pydicom.encaps.generate_frames(
        rle.PixelData, number_of_frames=1)).rstrip(b"\0")


def test_bulkdata_of_a_non_pixel_element(wado_pacs: PACS, tmp_path_factory: pytest.TempPathFactory,
                                         plan_files: dict[str, bytes]) -> None:
    ds = read_dicom(next(iter(plan_files.values())))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["icc"])
    blob = bytes(range(256)) * 20
    ds.add_new(0x00282000, "OB", blob)  # ICC Profile: a large binary value
    assert wado_pacs.stow([_bytes(ds)]).status_code == 200
    md = wado_pacs.get(_path(ds) + "/metadata").json()[0]
    uri = md["00282000"]["BulkDataURI"]
    assert uri.endswith("/bulkdata/00282000")
    assert parse_multipart(wado_pacs.http.get(uri, headers={"Accept": OCTETS}))[0][1] == blob
    assert wado_pacs.get(_path(ds) + "/bulkdata/00100010", accept=OCTETS).status_code == 404
    assert wado_pacs.get(_path(ds) + "/bulkdata/00991234", accept=OCTETS).status_code == 404


def test_rendered_and_thumbnails_decode_as_images(wado_pacs: PACS, small_plan: DemoPlan,
                                                  variants: dict[str, bytes]) -> None:
    _, study = small_plan.studies()[0]
    se = study.series[0]
    path = f"/studies/{study.study_uid}/series/{se.series_uid}/instances/{se.instance_uids[0]}"
    jpeg = wado_pacs.get(path + "/rendered")
    assert jpeg.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(jpeg.content))
    assert img.format == "JPEG" and img.size == (se.columns, se.rows)
    png = wado_pacs.get(path + "/rendered", accept="image/png")
    img = Image.open(io.BytesIO(png.content))
    assert img.format == "PNG" and img.mode == "L"
    pixels = np.asarray(img)
    assert pixels.std() > 10  # windowed: not a flat image
    narrow = np.asarray(Image.open(io.BytesIO(wado_pacs.get(
        path + "/rendered", accept="image/png", window="0,10").content)))
    assert not np.array_equal(narrow, pixels)
    small = Image.open(io.BytesIO(wado_pacs.get(path + "/rendered", accept="image/png",
                                                viewport="16,16").content))
    assert max(small.size) == 16
    for thumb_path in (f"/studies/{study.study_uid}/thumbnail",
                       f"/studies/{study.study_uid}/series/{se.series_uid}/thumbnail", path + "/thumbnail"):
        r = wado_pacs.get(thumb_path)
        assert r.status_code == 200
        assert max(Image.open(io.BytesIO(r.content)).size) <= 128
    multi = read_dicom(variants["multi"])
    frame2 = wado_pacs.get(_path(multi) + "/frames/2/rendered", accept="image/png")
    assert Image.open(io.BytesIO(frame2.content)).size == (multi.Columns, multi.Rows)
    rle = read_dicom(variants["rle"])
    assert Image.open(io.BytesIO(wado_pacs.get(_path(rle) + "/rendered").content)).format == "JPEG"
    assert wado_pacs.get(path + "/rendered", accept="image/gif").status_code == 406
    assert wado_pacs.get(path + "/rendered", window="a,b").status_code == 400


def test_unknown_resources_are_404_and_bad_uids_400(wado_pacs: PACS) -> None:
    for path in ("/studies/1.2.3", "/studies/1.2.3/metadata", "/studies/1.2.3/series/1.2.4",
                 "/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/1"):
        r = wado_pacs.get(path)
        assert r.status_code == 404, path
        assert r.json()["status"] == 404
    r = wado_pacs.get("/studies/1.02.3")
    assert r.status_code == 400 and "PS3.5" in r.json()["message"]
    r = wado_pacs.get("/no/such/resource")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"


def test_a_client_leaving_mid_stream_does_not_disturb_the_server(wado_pacs: PACS,
                                                                 small_plan: DemoPlan) -> None:
    import socket
    from urllib.parse import urlsplit

    _, study = small_plan.studies()[1]
    u = urlsplit(wado_pacs.url)
    for _ in range(3):
        with socket.create_connection((u.hostname, u.port), timeout=10) as s:
            s.sendall((f"GET {u.path}/studies/{study.study_uid} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                       f"Accept: {DICOM_ANY}\r\n\r\n").encode())
            assert s.recv(100).startswith(b"HTTP/1.1 200")
    r = wado_pacs.get(f"/studies/{study.study_uid}", accept=DICOM_ANY)
    assert r.status_code == 200 and len(parse_multipart(r)) == study.number_of_instances


def test_a_slow_reader_gets_every_byte_through_the_unsent_limit(pacs: PACS,
                                                                plan_files: dict[str, bytes]) -> None:
    """A 2 MiB instance to a reader with a 4 KiB receive buffer: the PACS's socket is full at every
    step, so sendfile(2) stops at the unsent limit (TCP_NOTSENT_LOWAT) over and over; the body is
    still the whole answer."""
    import socket
    from urllib.parse import urlsplit

    assert pacs.settings.unsent_limit_bytes and pacs.settings.sendfile_min_bytes  # the defaults apply
    ds = read_dicom(next(iter(plan_files.values())))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["large"])
    ds.Rows = ds.Columns = 1024
    ds.PixelData = np.arange(1024 * 1024, dtype="<u2").tobytes()
    assert pacs.stow([_bytes(ds)]).status_code == 200
    expected = pacs.get(_path(ds), accept=DICOM_ANY)
    u = urlsplit(pacs.url)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        s.settimeout(10)
        s.connect((u.hostname, u.port))
        s.sendall((f"GET {u.path}{_path(ds)} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                   f"Accept: {DICOM_ANY}\r\nConnection: close\r\n\r\n").encode())
        received = bytearray()
        while chunk := s.recv(1024):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) == int(expected.headers["content-length"]) > 2 * 1024 * 1024
    fields = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
    _, params = parse_content_type(fields["Content-Type"])
    assert [p for _, p in iter_parts(body, params["boundary"])] == [p for _, p in parse_multipart(expected)]


def test_limit_unsent_sets_tcp_notsent_lowat_on_tcp_sockets_only() -> None:
    import socket

    from servers.runtime import limit_unsent

    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as tcp:
        limit_unsent(tcp, 16384)
        assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == 16384
    a, b = socket.socketpair()  # a Unix socket (a broker's hop): left as it is, no error
    with a, b:
        limit_unsent(a, 16384)


def test_a_deflated_instance_is_inflated_for_retrieval_and_frames(pacs: PACS,
                                                                  plan_files: dict[str, bytes]) -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = read_dicom(next(iter(plan_files.values())))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    deflated = buf.getvalue()
    assert pacs.stow([deflated]).status_code == 200
    assert parse_multipart(pacs.get(_path(ds), accept=DICOM_ANY))[0][1] == deflated
    default = read_dicom(parse_multipart(pacs.get(_path(ds)))[0][1])
    assert default.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(default.pixel_array, ds.pixel_array)
    frame = parse_multipart(pacs.get(_path(ds) + "/frames/1", accept=OCTETS))[0][1]
    assert frame == ds.pixel_array.astype("<u2").tobytes()
