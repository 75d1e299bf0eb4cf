"""WADO-RS side by side (PS3.18 10.4): the same stored files retrieved from Orthanc and from our PACS.

Instances (study, series, instance resources) must come back as the stored objects: the same
attributes with the same values and byte-identical pixel data. Metadata (application/dicom+json) must
list the same attributes with the same values on both servers, binary values modulo their BulkDataURI,
and our BulkDataURIs must resolve to the stored bytes. Frames must be the stored frame bytes. Each
retrieval goes through dicomweb-client, on both sides.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.dataset import Dataset

from tests.conformance.compare import (
    SOP_INSTANCE_UID,
    Differences,
    compare_objects,
    first,
)
from tests.conformance.conftest import Pair
from tests.conformance.dataset import Instance

pytestmark = pytest.mark.orthanc

OCTET_STREAM_ANY = (("application/octet-stream", "*"),)


def same_as_stored(retrieved: Dataset, stored: Instance, where: str) -> Differences:
    """Every attribute of the stored file, with its value, in the retrieved one; pixel data identical."""
    diffs = Differences()
    original = stored.dataset()
    for element in original:
        if element.tag.group == 0x0002:
            continue
        if element.tag not in retrieved:
            diffs.add(f"{where}: {element.keyword or element.tag} missing")
        elif retrieved[element.tag].value != element.value:
            got = str(retrieved[element.tag].value)[:60]
            diffs.add(f"{where}: {element.keyword or element.tag} differs: "
                      f"stored {str(element.value)[:60]!r} retrieved {got!r}")
    return diffs


def _check_all(datasets: list[Dataset], expected: list[Instance], where: str) -> None:
    got = {str(ds.SOPInstanceUID): ds for ds in datasets}
    assert set(got) == {i.sop_instance_uid for i in expected}, where
    diffs = Differences()
    for inst in expected:
        uid = inst.sop_instance_uid
        diffs.items += same_as_stored(got[uid], inst, f"{where} {uid}").items
    assert not diffs, str(diffs)


def _first_multi_instance_series(instances: list[Instance]) -> list[Instance]:
    series_uid = next(i.series.series_uid for i in instances if len(i.series.instance_uids) > 1)
    return [i for i in instances if i.series.series_uid == series_uid]


def test_retrieve_study_returns_the_stored_instances(loaded: Pair, instances: list[Instance]) -> None:
    study_uid = max({i.study.study_uid for i in instances},
                    key=lambda uid: sum(i.study.study_uid == uid for i in instances))
    expected = [i for i in instances if i.study.study_uid == study_uid]
    for name, base in (("reference", loaded.reference), ("ours", loaded.ours)):
        _check_all(DICOMwebClient(base).retrieve_study(study_uid), expected, name)


def test_retrieve_series_returns_the_stored_instances(loaded: Pair, instances: list[Instance]) -> None:
    expected = _first_multi_instance_series(instances)
    inst = expected[0]
    for name, base in (("reference", loaded.reference), ("ours", loaded.ours)):
        _check_all(DICOMwebClient(base).retrieve_series(inst.study.study_uid, inst.series.series_uid),
                   expected, name)


def test_retrieve_every_instance_is_the_stored_instance(loaded: Pair, instances: list[Instance]) -> None:
    for name, base in (("reference", loaded.reference), ("ours", loaded.ours)):
        client = DICOMwebClient(base)
        got = [client.retrieve_instance(i.study.study_uid, i.series.series_uid, i.sop_instance_uid)
               for i in instances]
        _check_all(got, instances, name)


def _metadata_by_sop(base: str, study_uid: str) -> dict[str, dict[str, Any]]:
    return {str(first(m, SOP_INSTANCE_UID)): m
            for m in DICOMwebClient(base).retrieve_study_metadata(study_uid)}


def test_study_metadata_equal_modulo_bulkdata_uris(loaded: Pair, instances: list[Instance]) -> None:
    diffs = Differences()
    for study_uid in sorted({i.study.study_uid for i in instances}):
        ref, ours = _metadata_by_sop(loaded.reference, study_uid), _metadata_by_sop(loaded.ours, study_uid)
        assert set(ref) == set(ours), study_uid
        for sop in ref:
            only_ref, only_ours = set(ref[sop]) - set(ours[sop]), set(ours[sop]) - set(ref[sop])
            if only_ref or only_ours:
                diffs.add(f"{sop}: attributes only in reference {sorted(only_ref)}, "
                          f"only ours {sorted(only_ours)}")
            diffs.items += compare_objects(ref[sop], ours[sop], ref_base=loaded.reference,
                                           our_base=loaded.ours, where=sop, ignore=()).items
    assert not diffs, str(diffs)


def test_series_and_instance_metadata_agree_with_study_metadata(loaded: Pair,
                                                               instances: list[Instance]) -> None:
    inst = _first_multi_instance_series(instances)[0]
    client = DICOMwebClient(loaded.ours)
    study = _metadata_by_sop(loaded.ours, inst.study.study_uid)
    series = client.retrieve_series_metadata(inst.study.study_uid, inst.series.series_uid)
    assert {first(m, SOP_INSTANCE_UID) for m in series} == set(inst.series.instance_uids)
    single = client.retrieve_instance_metadata(inst.study.study_uid, inst.series.series_uid,
                                               inst.sop_instance_uid)
    assert single == study[inst.sop_instance_uid]


def test_pixel_data_in_metadata_resolves_to_the_stored_pixels(loaded: Pair,
                                                               instances: list[Instance]) -> None:
    """Pixel Data in metadata is a BulkDataURI (or, under a server's bulk data threshold, InlineBinary,
    PS3.18 F.2.7); either way it must give back the stored bytes."""
    inst = max(instances, key=lambda i: len(i.data))
    for name, base in (("reference", loaded.reference), ("ours", loaded.ours)):
        client = DICOMwebClient(base)
        meta = client.retrieve_instance_metadata(inst.study.study_uid, inst.series.series_uid,
                                                 inst.sop_instance_uid)
        element = meta["7FE00010"]
        if "InlineBinary" in element:
            assert base64.b64decode(element["InlineBinary"]) == inst.dataset().PixelData, name
            continue
        uri = element.get("BulkDataURI")
        assert uri, f"{name}: Pixel Data has neither BulkDataURI nor InlineBinary: {element}"
        parts = client.retrieve_bulkdata(uri, media_types=OCTET_STREAM_ANY)
        assert b"".join(parts) == inst.dataset().PixelData, name


def test_frames_are_the_stored_frame_bytes(loaded: Pair, instances: list[Instance]) -> None:
    for inst in instances[:4]:
        pixels = inst.dataset().PixelData
        for name, base in (("reference", loaded.reference), ("ours", loaded.ours)):
            frames = DICOMwebClient(base).retrieve_instance_frames(
                inst.study.study_uid, inst.series.series_uid, inst.sop_instance_uid, [1],
                media_types=OCTET_STREAM_ANY)
            assert frames == [pixels], f"{name} {inst.sop_instance_uid}"


@pytest.mark.parametrize("transfer_syntax", ["*", "1.2.840.10008.1.2.1"])
def test_retrieve_in_the_stored_transfer_syntax(loaded: Pair, instances: list[Instance],
                                                transfer_syntax: str) -> None:
    """``transfer-syntax=*`` (as stored) and Explicit VR Little Endian (how the files are stored) give the
    stored object unchanged (PS3.18 8.7.3.5.2)."""
    inst = instances[-1]
    for name, base in (("reference", loaded.reference), ("ours", loaded.ours)):
        ds = DICOMwebClient(base).retrieve_instance(
            inst.study.study_uid, inst.series.series_uid, inst.sop_instance_uid,
            media_types=(("application/dicom", transfer_syntax),))
        assert ds.file_meta.TransferSyntaxUID == inst.dataset().file_meta.TransferSyntaxUID, name
        assert not same_as_stored(ds, inst, name), str(same_as_stored(ds, inst, name))


@pytest.mark.parametrize("media_type", ["image/png", "image/jpeg"])
def test_rendered_instance_is_an_image_of_the_stored_size(loaded: Pair, instances: list[Instance],
                                                          media_type: str) -> None:
    """Rendered resources (PS3.18 10.4.1.1.3, 8.3.5.1): a consumer image of Columns x Rows pixels that is
    not blank, in the media type asked for."""
    inst = max(instances, key=lambda i: len(i.data))
    stored = inst.dataset()
    for name, base in (("reference", loaded.reference), ("ours", loaded.ours)):
        url = (f"{base}/studies/{inst.study.study_uid}/series/{inst.series.series_uid}"
               f"/instances/{inst.sop_instance_uid}/rendered")
        r = httpx.get(url, headers={"Accept": media_type}, timeout=30)
        assert r.status_code == 200, (name, r.status_code, r.text[:200])
        assert r.headers["content-type"].split(";")[0] == media_type, name
        with Image.open(io.BytesIO(r.content)) as image:
            assert image.size == (stored.Columns, stored.Rows), name
            extrema = image.convert("L").getextrema()
            assert extrema[0] != extrema[1], f"{name}: a blank image"
