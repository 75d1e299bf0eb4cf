"""Reading a downloaded file's UIDs from its first bytes: the fast reader agrees with pydicom on the
encodings it handles, hands everything else to pydicom, and a download of such a file still works."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from s4s_jupyter import DICOMweb
from s4s_jupyter.client.retrieve import _HEAD_BYTES, _header_from_head, _read_header
from s4s_jupyter.core.multipart import encode_parts

PREFIX = "1.2.826.0.1.3680043.8.498."


def instance(ts: str, *, n: int = 0, sequence: bool = False, long_header: bool = False,
             study: str | None = None, series: str | None = None) -> bytes:
    """A small CT instance in transfer syntax ``ts``: optionally with an undefined-length sequence or a
    100 kB private element before Instance Number."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(ts)
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
        PREFIX, entropy_srcs=[ts, str(n), str(sequence), str(long_header)])
    ds.StudyInstanceUID = study or generate_uid(PREFIX, entropy_srcs=["study", ts])
    ds.SeriesInstanceUID = series or generate_uid(PREFIX, entropy_srcs=["series", ts])
    ds.PatientID = "HDR-TEST-1"
    ds.Modality = "CT"
    ds.InstanceNumber = 7 + n
    if sequence:
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = generate_uid(PREFIX, entropy_srcs=["ref"])
        ds.ReferencedImageSequence = [item]
        ds["ReferencedImageSequence"].is_undefined_length = True
    if long_header:
        ds.add_new(0x00090010, "LO", "S4S TEST")
        ds.add_new(0x00091010, "OB", b"\x01" * 100_000)
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if ts == JPEGBaseline8Bit:  # the header is what matters: any encapsulated fragment will do
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = bytes(32)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit])
def test_the_fast_reader_agrees_with_pydicom(ts: str, tmp_path: Path) -> None:
    data = instance(ts)
    fast = _header_from_head(data[:_HEAD_BYTES])
    assert fast is not None and fast == _read_header(data[:_HEAD_BYTES], tmp_path / "unused")
    ds = dcmread(io.BytesIO(data))
    assert (fast.sop_uid, fast.series_uid, fast.study_uid, fast.patient_id, fast.instance_number) == (
        ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.PatientID, 7)


@pytest.mark.parametrize("ts, options", [
    (ExplicitVRLittleEndian, {"sequence": True}),  # an undefined-length sequence before Instance Number
    (ImplicitVRLittleEndian, {"sequence": True}),
    (ExplicitVRLittleEndian, {"long_header": True}),  # the header does not fit in the head
    (DeflatedExplicitVRLittleEndian, {}),
    (ExplicitVRBigEndian, {}),
])
def test_what_the_fast_reader_leaves_to_pydicom(ts: str, options: dict[str, bool], tmp_path: Path) -> None:
    data = instance(ts, sequence=options.get("sequence", False),
                    long_header=options.get("long_header", False))
    if options.get("sequence"):
        assert b"\xfe\xff\xdd\xe0" in data  # written with a sequence delimitation item
    assert _header_from_head(data[:_HEAD_BYTES]) is None
    path = tmp_path / "file.dcm"
    path.write_bytes(data)
    header = _read_header(data[:_HEAD_BYTES], path)
    ds = dcmread(path)
    assert (header.sop_uid, header.series_uid, header.instance_number) == (ds.SOPInstanceUID,
                                                                           ds.SeriesInstanceUID, 7)


def test_not_dicom_or_cut_short_is_left_to_pydicom() -> None:
    data = instance(ExplicitVRLittleEndian)
    assert _header_from_head(b"not a DICOM file") is None
    assert _header_from_head(bytes(128) + b"DICX" + data[132:]) is None
    assert _header_from_head(data[:300]) is None  # the head ends before Instance Number


def test_files_for_the_slow_path_download_like_the_others(pacs: str, tmp_path: Path) -> None:
    """Instances pydicom must read (long header, sequence, deflated) stored in the PACS over STOW-RS and
    downloaded: same layout, UIDs checked, resumable."""
    import httpx

    study = generate_uid(PREFIX, entropy_srcs=["slow-path-study"])
    series = generate_uid(PREFIX, entropy_srcs=["slow-path-series"])
    files = [instance(ExplicitVRLittleEndian, n=0, long_header=True, study=study, series=series),
             instance(ExplicitVRLittleEndian, n=1, sequence=True, study=study, series=series),
             instance(DeflatedExplicitVRLittleEndian, n=2, study=study, series=series),
             instance(ExplicitVRLittleEndian, n=3, study=study, series=series)]
    body, boundary = encode_parts([("application/dicom", f) for f in files])
    r = httpx.post(f"{pacs}/studies", content=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    assert r.status_code == 200, r.text
    with DICOMweb(pacs) as server:
        manifest = server.download(study, tmp_path, progress=False)
        assert set(manifest["status"]) == {"downloaded"} and len(manifest) == 4
        for row in manifest.itertuples():
            ds = dcmread(row.path)
            assert ds.SOPInstanceUID == row.sop_uid and ds.InstanceNumber == row.instance_number
            assert Path(row.path).parent == tmp_path / "HDR-TEST-1" / study / series
        assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".part")]
        assert set(server.download(study, tmp_path, progress=False)["status"]) == {"verified"}
