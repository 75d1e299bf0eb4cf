"""Files we did not make: every DICOM file shipped with pydicom's tests, stored and read back.

They cover transfer syntaxes (implicit, big endian, deflated, JPEG, JPEG-LS, JPEG 2000, RLE), colour
images, multi-frame objects, structured reports and broken files. Each is either stored or refused with
a DICOMweb answer; a stored one comes back as stored, and every other resource answers without a
server error (406 where its pixel data cannot be decoded here).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pydicom.data

from tests.pacs.conftest import PACS, parse_multipart

FILES = sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def test_every_file_is_stored_or_refused_cleanly_and_read_back(pacs: PACS) -> None:
    assert len(FILES) > 50
    outcome: dict[str, int] = {}
    seen_uids: set[str] = set()
    for path in FILES:
        data = path.read_bytes()
        r = pacs.stow([data])
        outcome[path.name] = r.status_code
        assert r.status_code in (200, 400, 409), (path.name, r.status_code, r.text)
        if r.status_code != 200:
            failed = r.json()["00081198"]["Value"][0]
            assert failed["00081197"]["Value"][0] in (0xA900, 0xC000, 0x0111), path.name
            assert r.headers["warning"], path.name
            if r.status_code == 409:  # pydicom's files reuse SOP Instance UIDs across variants
                assert failed["00081155"]["Value"][0] in seen_uids, path.name
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
        seen_uids.add(ds.SOPInstanceUID)
        base = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        assert parse_multipart(pacs.get(base, accept=AS_STORED))[0][1] == data, path.name
        assert pacs.get(base + "/metadata").status_code == 200, path.name
        assert pacs.get(base).status_code in (200, 406), path.name
        if "PixelData" in ds:
            assert pacs.get(base + "/frames/1").status_code in (200, 406), path.name
            assert pacs.get(base + "/rendered").status_code in (200, 406), path.name
    # the broken ones are refused for what is wrong with them
    for name in ("MR_truncated.dcm", "no_meta.dcm", "meta_missing_tsyntax.dcm", "rtplan_truncated.dcm"):
        assert outcome[name] == 400, name
    assert sum(code == 200 for code in outcome.values()) > 30
